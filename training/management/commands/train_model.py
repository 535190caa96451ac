"""Train one model synchronously, for people who prefer the shell."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clm_project.exceptions import DomainError
from registry.models import JobStatus, ModelType, Timeframe, TriggerReason
from training.data.selectors import bars_exist
from training.management.checks import seed_checked, symbol_checked, text_checked
from training.management.runner import run_job_with_progress
from training.models import TriggerOutcome, TriggerSource
from training.retraining.requests import training_request_check
from training.retraining.triggers import REQUESTS, Origin, trigger_training


def parse_param(text: str) -> tuple[str, object]:
    text_checked(text, option="--param")
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CommandError(f"--param {text!r}: use key=value")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        value = raw
    return key.strip(), value


class Command(BaseCommand):
    help = "Train, evaluate and (if it clears the gates) promote one model, in this process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-type", required=True, choices=ModelType.values)
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--timeframe", default="1h", choices=Timeframe.values)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--param", action="append", default=[], help="Trainer parameter key=value (repeat)."
        )
        parser.add_argument(
            "--reason", default=TriggerReason.MANUAL, choices=sorted(REQUESTS),
            help="A request's reason; automatic reasons come from their monitors and events.",
        )  # fmt: skip

    def handle(self, *args, **options) -> None:
        symbol = symbol_checked(options["symbol"])
        seed = seed_checked(options["seed"])
        if not bars_exist(symbol=symbol, timeframe=options["timeframe"]):
            raise CommandError(
                f"no bars for {symbol} {options['timeframe']}: import or generate them first"
            )
        params = dict(parse_param(p) for p in options["param"])
        request = {
            "model_type": options["model_type"], "symbol": symbol,
            "timeframe": options["timeframe"], "params": params, "seed": seed,
        }  # fmt: skip
        try:  # params, feature spec and bars are refused before any job exists
            training_request_check(**request)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        # Through the trigger handlers like every other door: the request is recorded.
        result = trigger_training(
            **request, trigger_reason=options["reason"], dispatch=False,
            origin=Origin(source=TriggerSource.INTERNAL, requested_by="cli"),
        )  # fmt: skip
        job = result.job
        if job is None:
            raise CommandError(result.record.reason)
        if result.outcome != TriggerOutcome.CREATED:
            raise CommandError(f"{job.model.model_id} already has an active job {job.pk}")
        job = run_job_with_progress(job)
        if job.status != JobStatus.COMPLETED:
            raise CommandError(f"job {job.pk} failed at {job.error_step}: {job.error_message}")
        version = job.version
        evaluation = version.evaluations.order_by("-created_at").first()
        self.stdout.write(
            self.style.SUCCESS(
                f"{version.model.model_id} v{version.version}: {version.status}; "
                f"Sharpe {evaluation.sharpe:.2f}, max drawdown {evaluation.max_drawdown:.1%}, "
                f"win rate {evaluation.win_rate:.1%}, trades {evaluation.trades}"
            )
        )
