"""Automatic rollback: production breaching its live limits goes back to the previous valid version.

A periodic task (`training.rollback_check`) reads each production version's live results over the
last N bars of its rollback policy: the realised returns trading services reported for it, when
there are N of them, else its paper returns on the bars since its training ended (the performance
monitor's reading, through the promotion package's paper trading). A drawdown within the window
beyond the policy's maximum, or a window Sharpe ratio below its minimum, is a breach.

On a breach CLM rolls back, at most once per model per cooldown, to the most recent earlier
production version that is still valid: it was in production before, is not failed, was not itself
rolled back from for a breach, and its artifact is present and matches its sha256. The rollback is
registry.services.model_version_rollback (audit row, model_rollback event, the reason), and every
breach is recorded as a RollbackDecision with what was done: rolled back, held by the cooldown, or
no valid target (then production stays, and a person is needed).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from clm_project.exceptions import DomainError
from registry import services
from registry.artifacts import ArtifactError, artifact_verify
from registry.locks import model_lock
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from training.data.bars import as_datetime
from training.data.selectors import stored_periods_per_year
from training.promotion.models import (
    RealisedReturn,
    ReturnSource,
    RollbackDecision,
    RollbackOutcome,
    RollbackPolicy,
)
from training.promotion.paper import paper_trade
from training.promotion.policies import evaluation_policy_for
from training.retraining.monitors.performance import rolling_sharpe

logger = logging.getLogger(__name__)

ACTOR = "auto-rollback"


def rollback_policy_for(model_type: str) -> RollbackPolicy:
    return RollbackPolicy.objects.filter(
        model_type=model_type
    ).first() or RollbackPolicy.default_for(model_type)


# ---------------------------------------------------------------------------------------------
# Limits (pure)


@dataclass(frozen=True)
class LimitCheck:
    drawdown: float
    rolling_sharpe: float
    breaches: list[dict[str, Any]]


def check_limits(
    returns: np.ndarray,
    *,
    max_drawdown: float,
    min_rolling_sharpe: float,
    periods_per_year: float,
) -> LimitCheck:
    """Drawdown and Sharpe ratio of the window's per-bar returns against the policy's limits.

    The drawdown is the largest fall of the window's equity (starting at 1) from its running peak;
    the Sharpe ratio is the monitor's rolling Sharpe (METRICS.md) of the whole window.
    """
    r = np.asarray(returns, dtype=np.float64)
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    drawdown = float(np.max(1.0 - equity / peak)) if len(r) else 0.0
    sharpe = rolling_sharpe(
        np.concatenate([[0.0], r]), window=len(r), periods_per_year=periods_per_year
    )
    breaches = []
    if drawdown > max_drawdown:
        breaches.append({"limit": "max_drawdown", "value": drawdown, "threshold": max_drawdown})
    if sharpe < min_rolling_sharpe:
        breaches.append(
            {"limit": "min_rolling_sharpe", "value": sharpe, "threshold": min_rolling_sharpe}
        )
    return LimitCheck(drawdown=drawdown, rolling_sharpe=sharpe, breaches=breaches)


def _breach_text(check: LimitCheck) -> str:
    parts = []
    for breach in check.breaches:
        if breach["limit"] == "max_drawdown":
            parts.append(
                f"drawdown {breach['value']:.1%} beyond the {breach['threshold']:.1%} limit"
            )
        else:
            parts.append(f"Sharpe {breach['value']:.2f} below the {breach['threshold']:.2f} limit")
    return " and ".join(parts)


# ---------------------------------------------------------------------------------------------
# Live results


@dataclass(frozen=True)
class LiveWindow:
    returns: np.ndarray
    source: str
    start: datetime
    end: datetime


def live_window(version: ModelVersion, *, bars: int) -> LiveWindow | None:
    """Production's last `bars` per-bar results: reported ones when there are enough, else paper
    returns on the bars since training ended. None when neither covers the window."""
    reported = list(
        RealisedReturn.objects.filter(version=version, source=ReturnSource.REPORTED)
        .order_by("-timestamp")
        .values_list("timestamp", "value")[:bars]
    )
    if len(reported) == bars:
        reported.reverse()
        return LiveWindow(
            returns=np.array([value for _, value in reported]),
            source=ReturnSource.REPORTED,
            start=reported[0][0],
            end=reported[-1][0],
        )
    if version.train_end is None or not version.artifact_path:
        return None
    fee = evaluation_policy_for(version.model.model_type, auto_promote_default=True).fee
    trades = paper_trade([version], after=version.train_end, fee=fee)
    if len(trades) < bars + 1:  # s[0] is the entry cost, not a bar's result
        return None
    return LiveWindow(
        returns=trades.returns[version.pk][-bars:],
        source=ReturnSource.COMPUTED,
        start=as_datetime(trades.timestamps[-bars]),
        end=as_datetime(trades.timestamps[-1]),
    )


# ---------------------------------------------------------------------------------------------
# Decisions


def rollback_check(*, model_id: str) -> RollbackDecision | None:
    """Check one model's production version; on a breach decide and record. None: no breach (or
    too little data, the policy off, no production version)."""
    production = (
        ModelVersion.objects.filter(model__model_id=model_id, status=ModelStatus.PRODUCTION)
        .select_related("model")
        .first()
    )
    if production is None:
        return None
    policy = rollback_policy_for(production.model.model_type)
    if not policy.enabled:
        return None
    live = live_window(production, bars=policy.window_bars)
    if live is None:
        return None
    check = check_limits(
        live.returns,
        max_drawdown=policy.max_drawdown,
        min_rolling_sharpe=policy.min_rolling_sharpe,
        periods_per_year=stored_periods_per_year(
            symbol=production.model.symbol, timeframe=production.model.timeframe
        ),
    )
    if not check.breaches:
        return None
    return _decide(production, policy, live, check)


def _decide(
    production: ModelVersion, policy: RollbackPolicy, live: LiveWindow, check: LimitCheck
) -> RollbackDecision | None:
    model_id = production.model.model_id
    breach = (
        f"v{production.version} {_breach_text(check)} over its last {len(live.returns)} bars "
        f"({live.source} results)"
    )
    with transaction.atomic():
        model = model_lock(pk=production.model_id)
        current = ModelVersion.objects.filter(model=model, status=ModelStatus.PRODUCTION).first()
        if current is None or current.pk != production.pk:
            return None  # production changed while we measured: the next run reads the new one
        recent = RollbackDecision.objects.filter(
            model=model, created_at__gte=timezone.now() - timedelta(hours=policy.cooldown_hours)
        )
        record = dict(
            model=model, from_version=current, source=live.source, window_start=live.start,
            window_end=live.end, n_bars=len(live.returns), drawdown=check.drawdown,
            rolling_sharpe=check.rolling_sharpe, breaches=check.breaches,
        )  # fmt: skip
        last = recent.filter(outcome=RollbackOutcome.ROLLED_BACK).order_by("-created_at").first()
        if last is not None:
            if recent.filter(outcome=RollbackOutcome.COOLDOWN, from_version=current).exists():
                return None  # said once per cooldown
            return RollbackDecision.objects.create(
                outcome=RollbackOutcome.COOLDOWN,
                reason=f"{breach}; not rolled back: the last automatic rollback of {model_id} "
                f"was at {last.created_at:%Y-%m-%d %H:%M} UTC, within the "
                f"{policy.cooldown_hours:g} h cooldown",
                **record,
            )
        if recent.filter(outcome=RollbackOutcome.NO_VALID_TARGET, from_version=current).exists():
            return None
        skipped = []
        for target, why in rollback_targets(model, current):
            if why:
                skipped.append({"version": target.version, "why": why})
                continue
            reason = f"automatic rollback: {breach}"
            try:
                services.model_version_rollback(
                    model_id=model_id, target_version=target.version, actor=ACTOR, reason=reason
                )
            except DomainError as exc:  # the service's own checks, under its lock
                skipped.append({"version": target.version, "why": exc.message})
                continue
            return RollbackDecision.objects.create(
                outcome=RollbackOutcome.ROLLED_BACK,
                to_version=target,
                skipped=skipped,
                reason=f"{reason}; rolled back to v{target.version}",
                **record,
            )
        passed_over = "; ".join(f"v{s['version']}: {s['why']}" for s in skipped) or "none exists"
        return RollbackDecision.objects.create(
            outcome=RollbackOutcome.NO_VALID_TARGET,
            skipped=skipped,
            reason=f"{breach}; no earlier production version is valid ({passed_over}); "
            "production stays",
            **record,
        )


def rollback_targets(
    model: RegisteredModel, current: ModelVersion
) -> Iterator[tuple[ModelVersion, str]]:
    """Earlier production versions, the most recently live first, each with why it is not a valid
    target ('' when it is)."""
    rolled_from = set(
        RollbackDecision.objects.filter(
            model=model, outcome=RollbackOutcome.ROLLED_BACK
        ).values_list("from_version_id", flat=True)
    )
    earlier = (
        ModelVersion.objects.filter(model=model)
        .exclude(pk=current.pk)
        .annotate(
            last_live=Max("audit__created_at", filter=Q(audit__to_status=ModelStatus.PRODUCTION))
        )
        .filter(last_live__isnull=False)
        .order_by("-last_live", "-version")
    )
    for version in earlier:
        yield version, _invalid_because(version, rolled_from)


def _invalid_because(version: ModelVersion, rolled_from: set[int]) -> str:
    if version.status in (ModelStatus.FAILED, ModelStatus.TRAINING):
        return f"it is {version.status}"
    if version.pk in rolled_from:
        return "it was rolled back automatically for breaching its limits"
    if not version.artifact_path:
        return "it has no artifact"
    try:
        artifact_verify(path=version.artifact_path, sha256=version.artifact_sha256)
    except ArtifactError as exc:
        return f"artifact unverifiable: {exc}"
    return ""


def rollback_check_all() -> dict[str, int]:
    """The whole pass in this process: every production model, each on its own (a worker fans
    the checks out: training.promotion.tasks)."""
    counts: Counter[str] = Counter()
    for model_id in rollback_model_ids():
        counts[rollback_step(model_id=model_id)] += 1
    return dict(counts)


def rollback_model_ids() -> list[str]:
    """The models a rollback pass checks: those with a production version."""
    return list(
        ModelVersion.objects.filter(status=ModelStatus.PRODUCTION)
        .order_by("model__model_id")
        .values_list("model__model_id", flat=True)
    )


def rollback_step(*, model_id: str) -> str:
    """One model's check; returns its outcome ("ok" without a decision, "failed")."""
    try:
        decision = rollback_check(model_id=model_id)
    except Exception:  # a broken artifact or bad bars for one model
        logger.exception("rollback check of %s failed", model_id)
        return "failed"
    return decision.outcome if decision else "ok"


# ---------------------------------------------------------------------------------------------
# Reads


def rollback_decisions_list(
    *, model_id: str | None = None, outcome: str | None = None
) -> QuerySet[RollbackDecision]:
    qs = RollbackDecision.objects.select_related("model", "from_version", "to_version")
    if model_id:
        qs = qs.filter(model__model_id=model_id)
    if outcome:
        qs = qs.filter(outcome=outcome)
    return qs.order_by("-created_at", "-id")
