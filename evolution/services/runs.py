"""Evolution runs and their generations: create, stop, resume, dispatch, advance, complete."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from evolution import nsga, selectors
from evolution.dispatch import enqueue_generation
from evolution.models import (
    FINISHED_EVALUATION,
    CandidateOrigin,
    EvaluationStatus,
    EvolutionRun,
    Generation,
    GenerationStatus,
    RunStatus,
    StrategyCandidate,
)
from evolution.search_space import (
    SearchSpace,
    SearchSpaceError,
    check_space_trains,
    resolve_search_space,
)
from evolution.services.evaluation import candidate_evaluate, claim_lease
from registry.models import (
    RegisteredModel,
    Timeframe,
)
from training.data.bars import get_data_loader
from training.data.dataset import Bars
from training.data.prepare import MIN_BARS
from training.promotion.policies import evaluation_policy_for

logger = logging.getLogger(__name__)

POPULATION_LIMITS = (4, 512)
GENERATION_LIMITS = (1, 500)


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class RunRequest:
    model_type: str
    symbol: str
    timeframe: str
    population_size: int = 32
    generations: int = 10
    seed: int = 0
    min_trades: int | None = None
    search_space: dict[str, Any] | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    requested_by: str = ""


def evolution_run_create(*, request: RunRequest, dispatch: bool = True) -> EvolutionRun:
    """Validate the settings, pin the data window, record the run and its first generation.

    The evaluation settings (fee, evaluation fraction) come from the model type's promotion policy
    and `min_trades` defaults to its gate; all are stored so every candidate is scored alike.
    """
    if request.timeframe not in Timeframe.values:
        raise InvalidInput(
            f"unknown timeframe {request.timeframe!r}; one of {', '.join(Timeframe.values)}",
            field="timeframe",
        )
    symbol = request.symbol.strip().upper()
    if not symbol:
        raise InvalidInput("symbol is required", field="symbol")
    for name, value, (low, high) in (
        ("population_size", request.population_size, POPULATION_LIMITS),
        ("generations", request.generations, GENERATION_LIMITS),
    ):
        if not low <= value <= high:
            raise InvalidInput(f"{name} must be between {low} and {high}", field=name)
    if request.seed < 0 or (request.min_trades is not None and request.min_trades < 0):
        field = "seed" if request.seed < 0 else "min_trades"
        raise InvalidInput(f"{field} must be >= 0", field=field)
    try:
        space = resolve_search_space(request.model_type, request.search_space)
        check_space_trains(space)
    except SearchSpaceError as exc:
        raise InvalidInput(exc.message, field=exc.field) from exc
    policy = evaluation_policy_for(request.model_type, auto_promote_default=True)
    bars = _load_bars(symbol, request.timeframe, request.window_start, request.window_end)
    first, last = (int(bars.timestamp[i].astype("int64")) for i in (0, -1))
    with transaction.atomic():
        run = EvolutionRun.objects.create(
            model_type=request.model_type,
            symbol=symbol,
            timeframe=request.timeframe,
            population_size=request.population_size,
            generations=request.generations,
            seed=request.seed,
            min_trades=(
                policy.gates.min_trades if request.min_trades is None else request.min_trades
            ),
            search_space=space.as_dict(),
            fee=policy.fee,
            eval_fraction=policy.eval_fraction,
            validation_fraction=policy.validation_fraction,
            window_start=datetime.fromtimestamp(first, tz=UTC),
            window_end=datetime.fromtimestamp(last + 1, tz=UTC),
            n_bars=len(bars),
            requested_by=request.requested_by,
        )
        generation = _propose_generation(run, history=[])
        if generation is None:
            raise InvalidInput("the search space offers no parameter set", field="search_space")
        if dispatch:
            transaction.on_commit(lambda: generation_dispatch(generation_id=generation.pk))
    return run


def _load_bars(symbol: str, timeframe: str, start: datetime | None, end: datetime | None) -> Bars:
    window = (start, end) if start or end else None
    if start and end and start >= end:
        raise InvalidInput("window_start must be before window_end", field="window_start")
    bars = get_data_loader()(symbol, timeframe, window)
    if len(bars) < MIN_BARS:
        raise InvalidInput(
            f"{len(bars)} bars of {symbol} {timeframe} in the window; an evolution run needs at "
            f"least {MIN_BARS}",
            field="symbol",
        )
    return bars


def run_space(run: EvolutionRun) -> SearchSpace:
    """The search space the run was created with (stored resolved on the run)."""
    return SearchSpace.from_dict(run.search_space)


def _propose_generation(
    run: EvolutionRun, *, history: list[list[nsga.Scored]]
) -> Generation | None:
    """Ask NSGA-II for the next generation and record it with its candidates. Caller is atomic.

    None when the algorithm has no untried parameter set left to offer (a tiny search space).
    """
    started = time.perf_counter()
    space = run_space(run)
    _, children = nsga.step(
        space,
        pop_size=run.population_size,
        seed=run.seed,
        history=history,
        propose_next=True,
    )
    if not children:
        return None
    number = len(history) + 1
    generation = Generation.objects.create(run=run, number=number)
    genomes = {member.key: member.genome for members in history for member in members}
    model_id = RegisteredModel.make_model_id(run.model_type, run.symbol, run.timeframe)
    candidates = [
        StrategyCandidate(
            base_strategy=model_id,
            model_type=run.model_type,
            symbol=run.symbol,
            timeframe=run.timeframe,
            params=space.decode(child.genome),
            genome=list(child.genome),
            origin=child.origin,
            mutation_description=_describe_child(space, child, genomes),
            run=run,
            generation=generation,
            index=index,
        )
        for index, child in enumerate(children)
    ]
    StrategyCandidate.objects.bulk_create(candidates)
    through = StrategyCandidate.parents.through
    through.objects.bulk_create(
        through(from_strategycandidate_id=candidate.pk, to_strategycandidate_id=parent)
        for candidate, child in zip(candidates, children, strict=True)
        for parent in child.parents
    )
    EvolutionRun.objects.filter(pk=run.pk).update(current_generation=number)
    run.current_generation = number
    Generation.objects.filter(pk=generation.pk).update(search_seconds=time.perf_counter() - started)
    return generation


def _describe_child(
    space: SearchSpace, child: nsga.Child, genomes: Mapping[str, Sequence[float]]
) -> str:
    if child.origin == CandidateOrigin.RANDOM:
        return "Latin hypercube sample of the search space"
    first = child.parents[0]
    changes = describe_changes(space, genomes[first], child.genome)
    if child.origin == CandidateOrigin.MUTATION:
        return f"polynomial mutation of {first[:8]}: {changes}"
    names = " x ".join(p[:8] for p in child.parents)
    return f"SBX crossover of {names}, then polynomial mutation; against {first[:8]}: {changes}"


def describe_changes(space: SearchSpace, before: Sequence[float], after: Sequence[float]) -> str:
    old, new = space.values(before), space.values(after)
    changed = [f"{name} {old[name]}->{new[name]}" for name in new if old[name] != new[name]]
    return ", ".join(changed) or "no parameter changed"


def evolution_run_stop(*, run_id: Any, actor: str) -> EvolutionRun:
    """Stop breeding: candidates already running finish, pending ones wait for a resume."""
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status != RunStatus.RUNNING:
            raise DomainError(f"evolution run {run.pk} is {run.status}; only a running run stops")
        run.status = RunStatus.STOPPED
        run.error_message = f"stopped by {actor or 'unknown'}"
        run.save(update_fields=["status", "error_message", "updated_at"])
    return run


def evolution_run_resume(*, run_id: Any, actor: str, dispatch: bool = True) -> EvolutionRun:
    """Carry on a stopped run, or a running one whose workers crashed.

    Whatever the current generation has not finished is dispatched again; claims older than the
    lease (a worker that died: its heartbeat stopped) are released first. Candidates that
    a live worker holds are left to it: their duplicate messages find them claimed.
    """
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise DomainError(
                f"evolution run {run.pk} is {run.status}; only stopped or running runs resume"
            )
        run.status = RunStatus.RUNNING
        run.error_message = ""
        run.save(update_fields=["status", "error_message", "updated_at"])
        stale_claims_release(run)
        logger.info("evolution run %s resumed by %s", run.pk, actor or "unknown")
        if dispatch:
            run_pk = run.pk
            transaction.on_commit(lambda: run_kick(run_id=run_pk))
    return run


def _lock_run(run_id: Any) -> EvolutionRun:
    run = EvolutionRun.objects.select_for_update().filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"unknown evolution run {run_id}")
    return run


def stale_claims_release(run: EvolutionRun) -> int:
    """Hand back claims whose heartbeat is older than the lease (their worker died); returns how
    many."""
    cutoff = timezone.now() - claim_lease()
    return StrategyCandidate.objects.filter(
        run=run, evaluation_status=EvaluationStatus.RUNNING, claimed_at__lt=cutoff
    ).update(evaluation_status=EvaluationStatus.PENDING, claim_token=None)


def run_kick(*, run_id: Any) -> str:
    """Dispatch what a running run needs next: its unfinished candidates, or its next step."""
    run = EvolutionRun.objects.filter(pk=run_id).first()
    if run is None or run.status != RunStatus.RUNNING:
        return "idle"
    latest = run.generation_set.order_by("-number").first()
    if latest is not None and latest.status == GenerationStatus.EVALUATING:
        generation_dispatch(generation_id=latest.pk)
        return "dispatched"
    return run_continue(run_id=run.pk)


def generation_dispatch(*, generation_id: int) -> int:
    """Send a generation's unfinished candidates to the workers as one chord; returns how many.

    With nothing left to evaluate the gathering step is sent alone. If the broker is unreachable
    the run stays as it is: a resume or the reaper dispatches it again. Without a broker (eager
    Celery) the run is driven to its end in this process.
    """

    generation = Generation.objects.select_related("run").get(pk=generation_id)
    candidate_ids = [
        str(pk)
        for pk in generation.candidates.exclude(
            evaluation_status__in=FINISHED_EVALUATION
        ).values_list("pk", flat=True)
    ]
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # No broker (the local demo): drive the run here, generation after generation, instead
        # of chords whose callbacks would nest each generation inside the previous one's.
        evolution_run_execute(run_id=generation.run_id)
        return len(candidate_ids)
    try:
        enqueue_generation(
            generation_id=generation.pk,
            candidate_ids=candidate_ids,
            model_type=generation.run.model_type,
        )
    except Exception as exc:  # broker down: never lose the run, leave it for resume or reaper
        logger.warning("dispatch of generation %s failed: %s", generation_id, exc)
        return 0
    return len(candidate_ids)


def generation_advance(*, generation_id: int, dispatch: bool = True) -> str:
    """The chord's callback: complete the generation if every candidate is finished, then go on.

    Several callbacks may arrive for one generation (a resume sends a second chord); the first to
    find every candidate finished completes it, the others find it complete.
    """
    completed = generation_complete(generation_id=generation_id)
    run_id = Generation.objects.values_list("run_id", flat=True).get(pk=generation_id)
    if completed == "waiting":
        return "waiting"
    return run_continue(run_id=run_id, dispatch=dispatch)


def generation_complete(*, generation_id: int) -> str:
    """Tell NSGA-II the generation's scores; record ranks, the Pareto front and its hypervolume."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update(of=("self",))
            .select_related("run")
            .get(pk=generation_id)
        )
        if generation.status == GenerationStatus.COMPLETE:
            return "complete"
        members = generation.candidates.defer("oos_returns")
        if members.exclude(evaluation_status__in=FINISHED_EVALUATION).exists():
            return "waiting"
        started = time.perf_counter()
        run = generation.run
        history = selectors.run_history(run=run, through=generation.number)
        standings, _ = nsga.step(
            run_space(run),
            pop_size=run.population_size,
            seed=run.seed,
            history=history,
            propose_next=False,
        )
        _record_standings(standings)
        by_key = {member.key: member for members_ in history for member in members_}
        population = [by_key[s.key] for s in standings]
        front = nsga.pareto_front(population)
        totals = members.aggregate(
            evaluated=Count("pk", filter=Q(evaluation_status=EvaluationStatus.EVALUATED)),
            failed=Count("pk", filter=Q(evaluation_status=EvaluationStatus.FAILED)),
            seconds=Sum("evaluation_seconds"),
        )
        generation.front = _front_entries(front)
        generation.hypervolume = nsga.hypervolume(front)
        generation.n_evaluated = totals["evaluated"] or 0
        generation.n_failed = totals["failed"] or 0
        generation.evaluation_seconds = totals["seconds"] or 0.0
        generation.status = GenerationStatus.COMPLETE
        generation.completed_at = timezone.now()
        generation.search_seconds += time.perf_counter() - started
        generation.save()
    return "completed"


def _record_standings(standings: Sequence[nsga.Standing]) -> None:
    rows = StrategyCandidate.objects.in_bulk([s.key for s in standings])
    for standing in standings:
        row = rows[uuid.UUID(standing.key)]
        row.pareto_rank = standing.rank
        row.crowding_distance = (
            None
            if standing.crowding is None or math.isinf(standing.crowding)
            else standing.crowding
        )
        row.fitness = nsga.crowded_score(standing)
    StrategyCandidate.objects.bulk_update(
        rows.values(), ["pareto_rank", "crowding_distance", "fitness"]
    )


def _front_entries(front: Sequence[nsga.Scored]) -> list[dict[str, Any]]:
    rows = {
        str(pk): (metrics, number)
        for pk, metrics, number in StrategyCandidate.objects.filter(
            pk__in=[m.key for m in front]
        ).values_list("pk", "metrics", "generation__number")
    }
    entries = []
    for member in front:
        metrics, number = rows[member.key]
        entries.append(
            {
                "id": member.key,
                "generation": number,
                "sharpe": metrics.get("sharpe"),
                "profit_factor": metrics.get("profit_factor"),
                "profit_factor_infinite": bool(metrics.get("profit_factor_infinite")),
                "max_drawdown": metrics.get("max_drawdown"),
                "trades": metrics.get("trades"),
            }
        )
    return sorted(entries, key=lambda e: (e["max_drawdown"], -(e["sharpe"] or 0.0)))


def run_continue(*, run_id: Any, dispatch: bool = True) -> str:
    """After a complete generation: propose the next one, or complete (or fail) the run.

    Under the run's row lock, so two callers cannot both propose generation n + 1.
    """
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status != RunStatus.RUNNING:
            return run.status
        latest = run.generation_set.order_by("-number").first()
        if latest.status == GenerationStatus.EVALUATING:
            return "evaluating"
        if latest.n_evaluated == 0:
            first_error = (
                latest.candidates.exclude(error_message="").values_list("error_message", flat=True)
            ).first()
            return _finish(run, RunStatus.FAILED, f"every candidate of generation "
                           f"{latest.number} failed; first error: {first_error}")  # fmt: skip
        if latest.number >= run.generations:
            return _finish(run, RunStatus.COMPLETED, "")
        history = selectors.run_history(run=run, through=latest.number)
        generation = _propose_generation(run, history=history)
        if generation is None:
            return _finish(
                run, RunStatus.COMPLETED, "the search space has no untried parameter set left"
            )
        if dispatch:
            transaction.on_commit(lambda: generation_dispatch(generation_id=generation.pk))
    return f"proposed generation {generation.number}"


def _finish(run: EvolutionRun, status: str, message: str) -> str:
    run.status = status
    run.error_message = message[:10_000]
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error_message", "finished_at", "updated_at"])
    return status


def evolution_run_execute(
    *, run_id: Any, on_progress: Callable[[str, dict[str, Any]], None] | None = None
) -> EvolutionRun:
    """Drive a run to its end in this process, one candidate after another (no Celery).

    Used by the `evolve` command and by tests. Candidates left running by a dead process are taken
    over, as a redelivered message would.
    """
    notify = on_progress or (lambda event, data: None)
    while True:
        run = EvolutionRun.objects.get(pk=run_id)
        if run.status != RunStatus.RUNNING:
            return run
        latest = run.generation_set.order_by("-number").first()
        if latest.status == GenerationStatus.EVALUATING:
            todo = list(
                latest.candidates.exclude(evaluation_status__in=FINISHED_EVALUATION)
                .order_by("index")
                .values_list("pk", flat=True)
            )
            for done, candidate_id in enumerate(todo, start=1):
                outcome = candidate_evaluate(candidate_id=candidate_id, redelivered=True)
                notify(
                    "candidate",
                    {"generation": latest.number, "done": done, "total": len(todo),
                     "outcome": outcome},
                )  # fmt: skip
            generation_complete(generation_id=latest.pk)
            latest.refresh_from_db()
            notify("generation", {"generation": latest})
        run_continue(run_id=run.pk, dispatch=False)
