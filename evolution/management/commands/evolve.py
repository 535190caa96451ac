"""Run an NSGA-II evolution in this process, showing its progress generation by generation."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clm_project.exceptions import DomainError
from evolution import services
from evolution.models import EvolutionRun, RunStatus
from evolution.search_space import supported_model_types
from registry.api.parsers import nesting_depth
from registry.models import Timeframe
from training.management.checks import seed_checked, symbol_checked, text_checked
from training.management.progress import Progress

# A search space is parameter -> {"low", "high"} or {"choices": [...]} or a value: shallow.
MAX_SPACE_DEPTH = 8


class Command(BaseCommand):
    help = (
        "Breed strategy candidates with NSGA-II in this process (no worker needed): every "
        "candidate is trained and backtested here. --resume RUN_ID finishes an earlier run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-type", choices=supported_model_types(), default="xgboost")
        parser.add_argument("--symbol")
        parser.add_argument("--timeframe", default="1h", choices=Timeframe.values)
        parser.add_argument("--population", type=int, default=16)
        parser.add_argument("--generations", type=int, default=5)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--min-trades", type=int, default=None)
        parser.add_argument(
            "--space",
            default="{}",
            help='Search-space overrides as JSON, e.g. \'{"n_estimators": {"low": 20, '
            '"high": 100}, "n_jobs": 2}\'.',
        )
        parser.add_argument("--resume", metavar="RUN_ID", help="Continue this run instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["resume"]:
                try:
                    run_id = uuid.UUID(options["resume"])
                except ValueError:
                    raise CommandError(f"--resume {options['resume']!r}: not a run id") from None
                run = services.evolution_run_resume(run_id=run_id, actor="cli", dispatch=False)
            else:
                run = self._create(options)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"run {run.pk}: {run.model_type} {run.symbol} {run.timeframe}, population "
            f"{run.population_size}, {run.generations} generations, {run.n_bars} bars"
        )
        progress: dict[int, Progress] = {}

        def on_progress(event: str, data: dict[str, Any]) -> None:
            if event == "candidate":
                bar = progress.setdefault(
                    data["generation"],
                    Progress(f"generation {data['generation']}", data["total"], stream=self.stdout),
                )
                bar.update(data["done"], data["outcome"])
                return
            generation = data["generation"]
            if generation.number in progress:
                progress[generation.number].done(f"{generation.n_evaluated} evaluated")
            best = max((e["sharpe"] for e in generation.front if e["sharpe"] is not None),
                       default=None)  # fmt: skip
            self.stdout.write(
                f"generation {generation.number}: hypervolume {generation.hypervolume:.4g}, "
                f"front of {len(generation.front)}, best Sharpe "
                f"{'-' if best is None else f'{best:.2f}'}, {generation.n_failed} failed, "
                f"search {generation.search_seconds:.2f}s vs training "
                f"{generation.evaluation_seconds:.1f}s"
            )

        run = services.evolution_run_execute(run_id=run.pk, on_progress=on_progress)
        if run.status != RunStatus.COMPLETED:
            raise CommandError(f"run {run.pk} ended {run.status}: {run.error_message}")
        self.stdout.write(self.style.SUCCESS(f"run {run.pk} completed"))

    def _create(self, options: dict[str, Any]) -> EvolutionRun:
        if not options["symbol"]:
            raise CommandError("--symbol is required (or --resume RUN_ID)")
        symbol = symbol_checked(options["symbol"])
        seed = seed_checked(options["seed"])
        if options["min_trades"] is not None:
            seed_checked(options["min_trades"], option="--min-trades")
        try:
            space = json.loads(text_checked(options["space"], option="--space"))
        except json.JSONDecodeError as exc:
            raise CommandError(f"--space is not JSON: {exc}") from exc
        except RecursionError:
            raise CommandError("--space nests too deeply") from None
        if nesting_depth(space, limit=MAX_SPACE_DEPTH) > MAX_SPACE_DEPTH:
            raise CommandError(f"--space nests deeper than {MAX_SPACE_DEPTH} levels")
        return services.evolution_run_create(
            request=services.RunRequest(
                model_type=options["model_type"],
                symbol=symbol,
                timeframe=options["timeframe"],
                population_size=options["population"],
                generations=options["generations"],
                seed=seed,
                min_trades=options["min_trades"],
                search_space=space,
                requested_by="cli",
            ),
            dispatch=False,
        )
