"""The fitness evaluation of one candidate: claim, train and backtest, record once."""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from evolution import nsga
from evolution.fitness import SEEN_UNTIL, Fitness, evaluate_genome, pack_returns
from evolution.models import (
    CandidateStatus,
    EvaluationStatus,
    RunStatus,
    StrategyCandidate,
)
from registry.liveness import Heartbeat
from training.data.bars import as_datetime, get_data_loader
from training.data.dataset import Bars
from training.evaluation.backtest import PERIODS_PER_YEAR
from training.promotion.policies import evaluation_policy_for

logger = logging.getLogger(__name__)

# No "dsr" among them: one backtest knows of one trial only (its dsr would equal psr). A
# candidate's DSR counts every trial on its data (selectors.candidate_deflated_sharpe).
METRIC_NAMES = (
    "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "exposure", "trades",
    "win_rate", "profit_factor", "avg_trade_return", "avg_bars_held", "psr",
)  # fmt: skip
NOT_STORED = ("dsr", "n_trials")


def claim_lease() -> timedelta:
    """How long a claim lives without a heartbeat: the worker evaluating a candidate refreshes
    `claimed_at` every CLM_JOB_HEARTBEAT_INTERVAL seconds, so an older claim belongs to a dead
    worker (on any broker: Redis gives a dead worker's message back only after its visibility
    timeout, far later)."""
    return timedelta(seconds=settings.CLM_JOB_HEARTBEAT_TIMEOUT)


def candidate_heartbeat(*, candidate_id: Any, token: uuid.UUID) -> bool:
    """The worker holding claim `token` is alive. False: the claim is no longer its own."""
    return bool(
        StrategyCandidate.objects.filter(
            pk=candidate_id, evaluation_status=EvaluationStatus.RUNNING, claim_token=token
        ).update(claimed_at=timezone.now())
    )


# ---------------------------------------------------------------------------------------------
# Fitness evaluation of one candidate


@dataclass(frozen=True)
class EvaluationSettings:
    fee: float
    eval_fraction: float
    validation_fraction: float
    min_trades: int
    seed: int
    window: tuple[datetime | None, datetime | None] | None


def _evaluation_settings(candidate: StrategyCandidate) -> EvaluationSettings:
    run = candidate.run
    if run is not None:
        return EvaluationSettings(
            run.fee, run.eval_fraction, run.validation_fraction, run.min_trades, run.seed,
            (run.window_start, run.window_end),
        )  # fmt: skip
    policy = evaluation_policy_for(candidate.model_type, auto_promote_default=True)
    return EvaluationSettings(
        policy.fee, policy.eval_fraction, policy.validation_fraction, policy.gates.min_trades, 0,
        None,
    )  # fmt: skip


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
    abandoned: its heartbeat is older than the lease. A redelivery alone proves nothing (a broker
    redelivers when a connection drops while the worker still runs): with a fresh heartbeat it is
    skipped, and the reaper hands the claim back once the heartbeat goes stale. After
    CLM_TRAINING_MAX_ATTEMPTS claims the candidate is failed instead. `redelivered` is logged.
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
        abandoned = row.claimed_at is None or now - row.claimed_at > claim_lease()
        if not abandoned:
            if redelivered:
                logger.info("candidate %s redelivered but its claim is alive", candidate_id)
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
        beat = functools.partial(candidate_heartbeat, candidate_id=candidate_id, token=token)
        with Heartbeat(name=f"candidate {candidate_id}", beat=beat):
            result = evaluate_genome(
                bars,
                model_type=candidate.model_type,
                params=candidate.params,
                seed=settings_.seed,
                fee=settings_.fee,
                eval_fraction=settings_.eval_fraction,
                validation_fraction=settings_.validation_fraction,
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
        "metrics": {k: v for k, v in metrics.items() if k not in NOT_STORED},
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
            training_metrics={
                **result.training_metrics,
                "split": result.split,
                SEEN_UNTIL: as_datetime(result.seen_until).isoformat(),
            },
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
