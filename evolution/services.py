"""The only writers of evolution rows: runs, generations, candidates, and selection for production.

How a run moves (every step idempotent, so a crash anywhere is repaired by running it again):
1. `evolution_run_create` records the run and its first generation (candidates from NSGA-II's ask)
   in one transaction, then dispatches the generation: a Celery chord of one task per candidate.
2. `candidate_evaluate` claims a candidate with a compare-and-set (pending -> running, with a fresh
   claim token), trains and backtests it outside any transaction, and records the result only if
   it still holds the claim: a candidate's fitness is written once. A failure is recorded on the
   candidate and the generation goes on.
3. The chord's callback, `generation_advance`, completes the generation once every candidate is
   finished (tell: ranks, Pareto front, hypervolume), then `run_continue` asks for the next
   generation or completes the run.
4. `evolution_run_resume` (or the reaper) re-dispatches whatever is unfinished; duplicate messages
   find their candidate claimed or finished and do nothing.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from evolution import nsga, selectors
from evolution.fitness import Fitness, evaluate_genome, pack_returns
from evolution.models import (
    FINISHED_EVALUATION,
    CandidateOrigin,
    CandidateStatus,
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
    supported_model_types,
)
from registry import services as registry_services
from registry.models import (
    EventType,
    JobStatus,
    ModelStatus,
    RegisteredModel,
    Timeframe,
    TriggerReason,
)
from training.data.bars import get_data_loader
from training.data.dataset import Bars
from training.data.prepare import MIN_BARS
from training.evaluation.backtest import PERIODS_PER_YEAR
from training.models import TriggerOutcome, TriggerSource
from training.promotion.policies import evaluation_policy_for
from training.retraining.triggers import Origin, trigger_training

logger = logging.getLogger(__name__)

# A claim older than the task's hard time limit plus this grace belongs to a dead worker.
LEASE_GRACE = timedelta(minutes=5)
# The original design's scheduler: a production Sharpe below this is "performing poorly".
POOR_SHARPE = 0.5
METRIC_NAMES = (
    "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "exposure", "trades",
    "win_rate", "profit_factor", "avg_trade_return", "avg_bars_held", "psr", "dsr",
)  # fmt: skip
POPULATION_LIMITS = (4, 512)
GENERATION_LIMITS = (1, 500)


def lease_of(model_type: str) -> timedelta:
    return timedelta(seconds=registry_services.time_limits_for(model_type)[1]) + LEASE_GRACE


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


def _space(run: EvolutionRun) -> SearchSpace:
    return SearchSpace.from_dict(run.search_space)


def _propose_generation(
    run: EvolutionRun, *, history: list[list[nsga.Scored]]
) -> Generation | None:
    """Ask NSGA-II for the next generation and record it with its candidates. Caller is atomic.

    None when the algorithm has no untried parameter set left to offer (a tiny search space).
    """
    started = time.perf_counter()
    space = _space(run)
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
    lease (a worker that died without its message coming back) are released first. Candidates that
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
        _release_stale_claims(run)
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


def _release_stale_claims(run: EvolutionRun) -> int:
    cutoff = timezone.now() - lease_of(run.model_type)
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
    from evolution.tasks import enqueue_generation

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
            _space(run),
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


# ---------------------------------------------------------------------------------------------
# Fitness evaluation of one candidate


@dataclass(frozen=True)
class EvaluationSettings:
    fee: float
    eval_fraction: float
    min_trades: int
    seed: int
    window: tuple[datetime | None, datetime | None] | None


def _evaluation_settings(candidate: StrategyCandidate) -> EvaluationSettings:
    run = candidate.run
    if run is not None:
        return EvaluationSettings(
            run.fee, run.eval_fraction, run.min_trades, run.seed, (run.window_start, run.window_end)
        )
    policy = evaluation_policy_for(candidate.model_type, auto_promote_default=True)
    return EvaluationSettings(policy.fee, policy.eval_fraction, policy.gates.min_trades, 0, None)


@functools.lru_cache(maxsize=2)
def _run_bars(
    run_id: uuid.UUID, symbol: str, timeframe: str, start: datetime, end: datetime
) -> Bars:
    """A run's bars, kept by each worker process for the next candidate of the same run: the
    window is pinned at the start, so every candidate of the run is scored on the same bars."""
    return get_data_loader()(symbol, timeframe, (start, end))


def candidate_claim(*, candidate_id: Any, redelivered: bool = False) -> uuid.UUID | None:
    """Compare-and-set a candidate to running under a fresh token; None: it is not ours to run.

    A pending candidate is claimed outright. A running one is taken over only when its claim is
    abandoned: this delivery is a redelivery (the broker saw the worker die) or the claim is older
    than the lease. After CLM_TRAINING_MAX_ATTEMPTS claims the candidate is failed instead.
    """
    token = uuid.uuid4()
    now = timezone.now()
    claimed = StrategyCandidate.objects.filter(
        pk=candidate_id, evaluation_status=EvaluationStatus.PENDING
    ).update(
        evaluation_status=EvaluationStatus.RUNNING,
        claim_token=token,
        claimed_at=now,
        attempts=F("attempts") + 1,
        error_message="",
    )
    if claimed:
        return token
    with transaction.atomic():
        row = (
            StrategyCandidate.objects.select_for_update()
            .only("evaluation_status", "claimed_at", "attempts", "model_type", "status")
            .filter(pk=candidate_id)
            .first()
        )
        if row is None or row.evaluation_status != EvaluationStatus.RUNNING:
            return None
        abandoned = (
            redelivered
            or row.claimed_at is None
            or (now - row.claimed_at > lease_of(row.model_type))
        )
        if not abandoned:
            return None
        if row.attempts >= settings.CLM_TRAINING_MAX_ATTEMPTS:
            StrategyCandidate.objects.filter(pk=row.pk).update(
                evaluation_status=EvaluationStatus.FAILED,
                status=CandidateStatus.FAILED,
                claim_token=None,
                evaluated_at=now,
                error_message=f"worker lost while evaluating; gave up after {row.attempts} "
                "attempts",
            )
            return None
        StrategyCandidate.objects.filter(pk=row.pk).update(
            claim_token=token, claimed_at=now, attempts=F("attempts") + 1
        )
    return token


def candidate_evaluate(*, candidate_id: Any, redelivered: bool = False) -> str:
    """Claim, train and backtest one candidate; record the result or the failure. Never raises
    for a bad candidate: one failure must not stop its generation."""
    from celery.exceptions import SoftTimeLimitExceeded

    started = time.perf_counter()
    candidate = (
        StrategyCandidate.objects.select_related("run").defer("oos_returns")
        .filter(pk=candidate_id).first()
    )  # fmt: skip
    if candidate is None:
        return "missing"
    if candidate.run is not None and candidate.run.status != RunStatus.RUNNING:
        return f"run {candidate.run.status}"
    token = candidate_claim(candidate_id=candidate_id, redelivered=redelivered)
    if token is None:
        return "skipped"
    settings_ = _evaluation_settings(candidate)
    try:
        if candidate.run_id:
            bars = _run_bars(candidate.run_id, candidate.symbol, candidate.timeframe,
                             *settings_.window)  # fmt: skip
        else:
            bars = get_data_loader()(candidate.symbol, candidate.timeframe, settings_.window)
        result = evaluate_genome(
            bars,
            model_type=candidate.model_type,
            params=candidate.params,
            seed=settings_.seed,
            fee=settings_.fee,
            eval_fraction=settings_.eval_fraction,
            periods_per_year=PERIODS_PER_YEAR[candidate.timeframe],
        )
    except SoftTimeLimitExceeded:
        _record_failure(candidate_id, token, "evaluation ran past its soft time limit")
        return "failed"
    except Exception as exc:  # any model or data error fails this candidate only
        _record_failure(candidate_id, token, f"{type(exc).__name__}: {exc}")
        logger.info("candidate %s failed: %s", candidate_id, exc)
        return "failed"
    recorded = _record_result(
        candidate_id,
        token,
        result,
        min_trades=settings_.min_trades,
        task_seconds=time.perf_counter() - started,
    )
    return "evaluated" if recorded else "superseded"


def _performance_fields(metrics: Mapping[str, Any], *, min_trades: int) -> dict[str, Any]:
    F_, G = nsga.objectives(metrics, min_trades=min_trades)
    return {
        "metrics": dict(metrics),
        "objectives": {
            "sharpe": -F_[0],
            "profit_factor": -F_[1],
            "max_drawdown": F_[2],
            "trades": metrics.get("trades"),
            "F": list(F_),
            "G": list(G),
        },
        "feasible": G[0] <= 0,
    }


def _record_result(
    candidate_id: Any, token: uuid.UUID, result: Fitness, *, min_trades: int, task_seconds: float
) -> bool:
    """Write the fitness only while still holding the claim (compare-and-set on the token)."""
    return bool(
        StrategyCandidate.objects.filter(
            pk=candidate_id, evaluation_status=EvaluationStatus.RUNNING, claim_token=token
        ).update(
            evaluation_status=EvaluationStatus.EVALUATED,
            claim_token=None,
            evaluated_at=timezone.now(),
            evaluation_seconds=result.seconds,
            task_seconds=task_seconds,
            training_metrics={**result.training_metrics, "split": result.split},
            oos_returns=pack_returns(result.returns),
            **_performance_fields(result.metrics, min_trades=min_trades),
        )
    )


def _record_failure(candidate_id: Any, token: uuid.UUID, error: str) -> bool:
    return bool(
        StrategyCandidate.objects.filter(
            pk=candidate_id, evaluation_status=EvaluationStatus.RUNNING, claim_token=token
        ).update(
            evaluation_status=EvaluationStatus.FAILED,
            status=CandidateStatus.FAILED,
            claim_token=None,
            evaluated_at=timezone.now(),
            error_message=error[:10_000],
        )
    )


def candidate_update_performance(
    *, candidate_id: Any, metrics: Mapping[str, Any]
) -> StrategyCandidate:
    """Record performance measured elsewhere (a shadow or live period) as the candidate's metrics.

    Names are METRICS.md's; the objectives and feasibility follow from them. Not while a worker
    is evaluating the candidate.
    """
    unknown = set(metrics) - {*METRIC_NAMES, "profit_factor_infinite"}
    if unknown:
        raise InvalidInput(
            f"unknown metrics {sorted(unknown)}; use the METRICS.md names", field="metrics"
        )
    for name in ("sharpe", "max_drawdown", "profit_factor", "trades"):
        value = metrics.get(name)
        if name != "profit_factor" and value is None:
            raise InvalidInput(f"metrics need {name}", field=f"metrics.{name}")
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
            raise InvalidInput(f"{name} must be a finite number", field=f"metrics.{name}")
    with transaction.atomic():
        candidate = (
            StrategyCandidate.objects.select_for_update(of=("self",)).select_related("run")
            .defer("oos_returns").filter(pk=candidate_id).first()
        )  # fmt: skip
        if candidate is None:
            raise NotFound(f"unknown candidate {candidate_id}")
        if candidate.evaluation_status == EvaluationStatus.RUNNING:
            raise DomainError(f"candidate {candidate.pk} is being evaluated; try again later")
        fields = _performance_fields(
            {**candidate.metrics, **metrics},
            min_trades=_evaluation_settings(candidate).min_trades,
        )
        for name, value in fields.items():
            setattr(candidate, name, value)
        if candidate.evaluation_status == EvaluationStatus.PENDING:
            candidate.evaluation_status = EvaluationStatus.EVALUATED
            candidate.evaluated_at = timezone.now()
        candidate.save(update_fields=[*fields, "evaluation_status", "evaluated_at"])
    return candidate


# ---------------------------------------------------------------------------------------------
# Candidates outside runs: the original design's mutate, crossover and propose operations


def _space_of(candidate: StrategyCandidate) -> SearchSpace:
    if candidate.run is not None:
        return _space(candidate.run)
    try:
        return resolve_search_space(candidate.model_type)
    except SearchSpaceError as exc:
        raise InvalidInput(exc.message, field=exc.field) from exc


def _child_of(
    *,
    parents: Sequence[StrategyCandidate],
    genome: Sequence[float],
    space: SearchSpace,
    origin: str,
    description: str,
) -> StrategyCandidate:
    first = parents[0]
    child = StrategyCandidate.objects.create(
        base_strategy=first.base_strategy,
        model_type=first.model_type,
        symbol=first.symbol,
        timeframe=first.timeframe,
        params=space.decode(genome, base=first.params),
        genome=list(genome),
        origin=origin,
        mutation_description=description,
    )
    child.parents.set(parents)
    return child


def _genome_of(candidate: StrategyCandidate, space: SearchSpace) -> np.ndarray:
    """The stored genome when it is in `space` (its run's), else its params encoded afresh."""
    if candidate.run_id and candidate.genome and space == _space(candidate.run):
        return np.asarray(candidate.genome, dtype=float)
    return space.encode(candidate.params)


def _seed(*parts: Any) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def mutate_strategy(
    *, parent_id: Any, seed: int | None = None, origin: str = CandidateOrigin.MUTATION,
    note: str = "", dispatch: bool = True,
) -> StrategyCandidate:  # fmt: skip
    """A polynomial mutation of a candidate, as a new standalone candidate to evaluate."""
    parent = selectors.candidate_get(candidate_id=parent_id)
    space = _space_of(parent)
    before = _genome_of(parent, space)
    if seed is None:
        seed = _seed(parent.pk, parent.children.count(), time.time_ns())
    genome = nsga.mutate(space, before, seed=seed)
    description = f"polynomial mutation of {str(parent.pk)[:8]}: " + describe_changes(
        space, before, genome
    )
    with transaction.atomic():
        child = _child_of(
            parents=[parent], genome=genome, space=space, origin=origin,
            description=f"{note}{description}",
        )  # fmt: skip
        if dispatch:
            _dispatch_after_commit([child.pk])
    return child


def crossover_strategies(
    *, first_id: Any, second_id: Any, seed: int | None = None, dispatch: bool = True
) -> StrategyCandidate:
    """SBX crossover of two candidates of the same model line, as a new candidate to evaluate."""
    first = selectors.candidate_get(candidate_id=first_id)
    second = selectors.candidate_get(candidate_id=second_id)
    if first.pk == second.pk:
        raise InvalidInput("a crossover needs two different candidates", field="second")
    if (first.model_type, first.symbol, first.timeframe) != (
        second.model_type, second.symbol, second.timeframe,
    ):  # fmt: skip
        raise InvalidInput(
            "both parents must share model type, symbol and timeframe", field="second"
        )
    space = _space_of(first)
    a, b = _genome_of(first, space), _genome_of(second, space)
    if seed is None:
        seed = _seed(first.pk, second.pk, time.time_ns())
    genome = nsga.crossover(space, a, b, seed=seed)
    description = (
        f"SBX crossover of {str(first.pk)[:8]} x {str(second.pk)[:8]}, then polynomial "
        f"mutation; against {str(first.pk)[:8]}: {describe_changes(space, a, genome)}"
    )
    with transaction.atomic():
        child = _child_of(
            parents=[first, second], genome=genome, space=space,
            origin=CandidateOrigin.CROSSOVER, description=description,
        )  # fmt: skip
        if dispatch:
            _dispatch_after_commit([child.pk])
    return child


def propose_new_candidates(
    *, performance_data: Mapping[str, Any], n: int = 3, dispatch: bool = True
) -> list[StrategyCandidate]:
    """When a production model performs poorly, propose `n` mutations of it to evaluate.

    `performance_data` names the model (`model_id`, or `model_type`, `symbol` and `timeframe`) and
    carries its recent `sharpe`; below `sharpe_threshold` (default 0.5, the original design's) the
    production version becomes a manual root candidate (created once) and its mutations are
    proposed; with a `regime`, they are regime adaptations. Returns [] when performance is fine.
    """
    sharpe = performance_data.get("sharpe")
    if not isinstance(sharpe, int | float) or not math.isfinite(sharpe):
        raise InvalidInput("performance_data needs a finite sharpe", field="sharpe")
    threshold = performance_data.get("sharpe_threshold", POOR_SHARPE)
    if not 1 <= n <= 32:
        raise InvalidInput("n must be between 1 and 32", field="n")
    if sharpe >= threshold:
        return []
    from registry.selectors import production_version_get

    model_id = performance_data.get("model_id") or RegisteredModel.make_model_id(
        str(performance_data.get("model_type", "")),
        str(performance_data.get("symbol", "")),
        str(performance_data.get("timeframe", "")),
    )
    version = production_version_get(model_id=model_id)
    model = version.model
    if model.model_type not in supported_model_types():
        raise InvalidInput(
            f"evolution supports {', '.join(supported_model_types())}, not {model.model_type}",
            field="model_id",
        )
    regime = performance_data.get("regime")
    origin = CandidateOrigin.REGIME_ADAPTATION if regime else CandidateOrigin.MUTATION
    note = (
        f"{'regime ' + str(regime) + '; ' if regime else ''}production v{version.version} "
        f"Sharpe {sharpe:.3f} < {threshold}; "
    )
    with transaction.atomic():
        root = _production_root(version)
        children = [
            mutate_strategy(
                parent_id=root.pk,
                seed=_seed(root.pk, root.children.count(), i, sharpe),
                origin=origin,
                note=note,
                dispatch=False,
            )
            for i in range(n)
        ]
        if dispatch:
            pending = [c.pk for c in (root, *children)]
            _dispatch_after_commit(pending)
    return children


def _production_root(version: Any) -> StrategyCandidate:
    """The candidate standing for a production version (one per version), the lineage's root."""
    existing = (
        StrategyCandidate.objects.filter(produced_version=version, origin=CandidateOrigin.MANUAL)
        .defer("oos_returns")
        .first()
    )
    if existing is not None:
        return existing
    model = version.model
    params = {**version.params, "features": version.feature_spec or {}}
    space = resolve_search_space(model.model_type)
    return StrategyCandidate.objects.create(
        base_strategy=model.model_id,
        model_type=model.model_type,
        symbol=model.symbol,
        timeframe=model.timeframe,
        params=params,
        genome=list(space.encode(params)),
        origin=CandidateOrigin.MANUAL,
        mutation_description=f"production version v{version.version} of {model.model_id}",
        status=CandidateStatus.ACTIVE,
        produced_version=version,
    )


def _dispatch_after_commit(candidate_ids: Sequence[Any]) -> None:
    from evolution.tasks import enqueue_candidates

    ids = [str(pk) for pk in candidate_ids]

    def send() -> None:
        try:
            enqueue_candidates(candidate_ids=ids)
        except Exception as exc:  # broker down: candidates stay pending, the reaper sends them
            logger.warning("dispatch of candidates %s failed: %s", ids, exc)

    transaction.on_commit(send)


# ---------------------------------------------------------------------------------------------
# Selection for production


def candidate_select(
    *, candidate_id: Any, actor: str, reason: str = ""
) -> tuple[StrategyCandidate, Any]:
    """Send an evaluated candidate to the training pipeline with its params.

    One transaction: the training job (trigger strategy_evolution), the strategy_candidate_created
    event and the candidate's move to `training`. Its deflated Sharpe ratio, with K = every
    evaluation and candidate on the same data, is recorded beside its Sharpe; when the model
    type's promotion policy sets `min_dsr` (0.95 by default) and there is more than one trial, a
    candidate below it is refused here, as its version would be at the gate.
    """
    candidate = selectors.candidate_get(candidate_id=candidate_id)
    _check_selectable(candidate)
    dsr, trials = selectors.candidate_deflated_sharpe(candidate=candidate)
    min_dsr = evaluation_policy_for(
        candidate.model_type, auto_promote_default=settings.CLM_AUTO_PROMOTE
    ).gates.min_dsr
    if min_dsr is not None and trials > 1 and (dsr is None or dsr < min_dsr):
        shown = "unknown" if dsr is None else f"{dsr:.3f}"
        raise DomainError(
            f"candidate {candidate.pk} has a deflated Sharpe ratio of {shown} over {trials} "
            f"trials; the {candidate.model_type} promotion gates require at least {min_dsr}",
            extra={"dsr": dsr, "dsr_trials": trials, "min_dsr": min_dsr},
        )
    sharpe = candidate.metrics.get("sharpe")
    context = {
        "candidate_id": str(candidate.pk),
        "run_id": str(candidate.run_id) if candidate.run_id else None,
        "generation": candidate.generation.number if candidate.generation_id else None,
        "sharpe": sharpe,
        "dsr": dsr,
        "dsr_trials": trials,
        "reason": reason,
    }
    with transaction.atomic():
        locked = (
            StrategyCandidate.objects.select_for_update().defer("oos_returns").get(pk=candidate.pk)
        )
        _check_selectable(locked)
        # Through the trigger handlers like every other door: the selection is recorded.
        result = trigger_training(
            model_type=candidate.model_type,
            symbol=candidate.symbol,
            timeframe=candidate.timeframe,
            trigger_reason=TriggerReason.STRATEGY_EVOLUTION,
            params=candidate.params,
            seed=candidate.run.seed if candidate.run_id else 0,
            origin=Origin(source=TriggerSource.INTERNAL, requested_by=actor, context=context),
        )
        job = result.job
        if job is None:
            raise DomainError(result.record.reason)
        if result.outcome != TriggerOutcome.CREATED:
            raise DomainError(
                f"{job.model.model_id} already has an active training job {job.pk}; select the "
                "candidate again when it has finished",
                extra={"job_id": str(job.pk)},
            )
        parents = selectors.candidate_parent_ids(candidate=candidate)
        registry_services.outbox_event_write(
            event_type=EventType.STRATEGY_CANDIDATE_CREATED,
            model_id=job.model.model_id,
            payload={
                **context,
                "job_id": str(job.pk),
                "origin": candidate.origin,
                "parents": parents,
                "params": candidate.params,
                "metrics": {
                    name: candidate.metrics.get(name)
                    for name in ("sharpe", "max_drawdown", "profit_factor", "trades", "win_rate")
                },
                "selected_by": actor,
            },
        )
        locked.status = CandidateStatus.TRAINING
        locked.training_job = job
        locked.dsr = dsr
        locked.dsr_trials = trials
        locked.selected_by = actor
        locked.selected_at = timezone.now()
        locked.save(
            update_fields=[
                "status", "training_job", "dsr", "dsr_trials", "selected_by", "selected_at",
            ]
        )  # fmt: skip
    return locked, job


def _check_selectable(candidate: StrategyCandidate) -> None:
    if candidate.evaluation_status != EvaluationStatus.EVALUATED:
        raise DomainError(
            f"candidate {candidate.pk} is not evaluated (evaluation {candidate.evaluation_status})"
            "; only evaluated candidates can be selected"
        )
    if candidate.status != CandidateStatus.PROPOSED:
        raise DomainError(
            f"candidate {candidate.pk} is {candidate.status}; only proposed candidates can be "
            "selected"
        )


# ---------------------------------------------------------------------------------------------
# Upkeep: lifecycle statuses from the registry, stalled runs


_STATUS_OF_VERSION = {
    ModelStatus.TRAINING: CandidateStatus.TRAINING,
    # Passed its gates but not live: it waits beside production, as a shadow does.
    ModelStatus.CANDIDATE: CandidateStatus.SHADOW,
    ModelStatus.SHADOW: CandidateStatus.SHADOW,
    ModelStatus.PRODUCTION: CandidateStatus.ACTIVE,
    ModelStatus.RETIRED: CandidateStatus.RETIRED,
    ModelStatus.FAILED: CandidateStatus.FAILED,
}


def candidates_sync_lifecycle() -> int:
    """Follow selected candidates through the registry: their job's version decides their status.
    Returns how many changed."""
    changed = 0
    rows = (
        StrategyCandidate.objects.filter(
            status__in=[CandidateStatus.TRAINING, CandidateStatus.SHADOW, CandidateStatus.ACTIVE]
        )
        .filter(Q(training_job__isnull=False) | Q(produced_version__isnull=False))
        .select_related("training_job__version", "produced_version")
        .defer("oos_returns")
    )
    for candidate in rows:
        job = candidate.training_job
        version = (job.version if job is not None else None) or candidate.produced_version
        if version is not None:
            status = _STATUS_OF_VERSION[version.status]
        elif job is not None and job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            status = CandidateStatus.FAILED
        else:
            continue
        if status != candidate.status or version != candidate.produced_version:
            changed += StrategyCandidate.objects.filter(
                pk=candidate.pk, status=candidate.status
            ).update(status=status, produced_version=version)
    return changed


STALL_AFTER = timedelta(minutes=10)


def evolution_runs_reap() -> dict[str, int]:
    """Repair running runs: release dead claims and re-dispatch generations that made no
    progress for STALL_AFTER; continue runs whose last generation completed but went no further;
    dispatch standalone candidates left pending; sync lifecycle statuses."""
    counts = {"redispatched": 0, "continued": 0, "released": 0, "standalone": 0, "synced": 0}
    now = timezone.now()
    for run in EvolutionRun.objects.filter(status=RunStatus.RUNNING):
        latest = run.generation_set.order_by("-number").first()
        if latest is None:
            continue
        if latest.status == GenerationStatus.COMPLETE:
            run_continue(run_id=run.pk)
            counts["continued"] += 1
            continue
        counts["released"] += _release_stale_claims(run)
        recent = latest.candidates.filter(
            Q(claimed_at__gte=now - STALL_AFTER) | Q(evaluated_at__gte=now - STALL_AFTER)
        ).exists()
        if not recent and latest.created_at < now - STALL_AFTER:
            generation_dispatch(generation_id=latest.pk)
            counts["redispatched"] += 1
    standalone = list(
        StrategyCandidate.objects.filter(
            run__isnull=True,
            evaluation_status=EvaluationStatus.PENDING,
            created_at__lt=now - STALL_AFTER,
        ).values_list("pk", flat=True)
    )
    if standalone:
        from evolution.tasks import enqueue_candidates

        enqueue_candidates(candidate_ids=[str(pk) for pk in standalone])
        counts["standalone"] = len(standalone)
    counts["synced"] = candidates_sync_lifecycle()
    return counts
