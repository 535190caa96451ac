"""Shadow testing: a gate-passing version paper-trades beside production on the same new bars.

A comparison starts when a version enters `shadow` (from the pipeline, per the shadow policy, or
by hand through the API). A periodic task (`training.shadow_evaluate`) then takes evaluation steps:
both models' positions on the bars after `start_after`, backtested with the promotion policy's fee
(training.evaluation.backtest, so METRICS.md's definitions hold), the new bars' returns stored as
one observation, and the paired test of training.evaluation.stats on the series so far.

Decisions happen only at the design's planned looks (bar counts from min_bars to max_bars, see
training.evaluation.stats.sequential_design), and only once the shadow version has made min_trades
trades:
- the statistic crosses the look's boundary: promote (registry.services.model_version_promote) when
  auto-promotion is on, else back to candidate marked ready;
- the last look passes without a crossing: retire (model_version_set_status);
- otherwise keep shadowing. Steps between looks record the test too, for information.
The production version is fixed when the comparison starts; if production changes, the comparison
ends as superseded and the next run compares the shadow version with the new production afresh.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from clm_project.compiled import CompiledQuery
from clm_project.exceptions import DomainError, NotFound
from registry import services
from registry.locks import model_lock, row_lock_under_model
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from training.data.bars import as_datetime
from training.data.selectors import stored_periods_per_year
from training.evaluation.stats import (
    PairedTest,
    SequentialDesign,
    diebold_mariano,
    sequential_design,
)
from training.promotion.decision import Decision, Outcome, auto_promotion_on, enact
from training.promotion.decision import decide as decide_promotion
from training.promotion.models import (
    ComparisonStatus,
    ShadowComparison,
    ShadowDecision,
    ShadowMode,
    ShadowObservation,
    ShadowPolicy,
)
from training.promotion.paper import (
    PaperTrades,
    annualized_sharpe,
    latest_bar_at,
    paper_trade,
    trades_of,
)
from training.promotion.policies import evaluation_policy_for

logger = logging.getLogger(__name__)

ACTOR = "shadow"
SHADOWABLE = (ModelStatus.CANDIDATE, ModelStatus.SHADOW)


def shadow_start_after(model: RegisteredModel, *versions: ModelVersion) -> datetime:
    """Where a comparison's new bars begin: after the latest stored bar, and after every bar any
    of `versions` saw in training or evaluation, so both models trade bars new to both."""
    moments = [latest_bar_at(model.symbol, model.timeframe)]
    for version in versions:
        last = ((version.manifest or {}).get("bars") or {}).get("last")
        if last:
            moments.append(datetime.fromisoformat(last))
        moments.append(version.train_end)
    known = [m for m in moments if m is not None]
    return max(known) if known else timezone.now()


# ---------------------------------------------------------------------------------------------
# Series storage


def pack_floats(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def pack_times(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values.astype("datetime64[s]").astype("<i8")).tobytes()


def unpack_floats(blob: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<f8")


def unpack_times(blob: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<i8").astype("datetime64[s]")


@dataclass(frozen=True)
class ShadowSeries:
    timestamps: np.ndarray
    shadow: np.ndarray
    production: np.ndarray


def shadow_series(comparison: ShadowComparison) -> ShadowSeries:
    """The comparison's stored per-bar returns, every step's chunk in order."""
    rows = comparison.observations.order_by("id").values_list(
        "bar_times", "shadow_returns", "production_returns"
    )
    times, shadow, production = [], [], []
    for bar_times, s, p in rows:
        times.append(unpack_times(bar_times))
        shadow.append(unpack_floats(s))
        production.append(unpack_floats(p))
    if not times:
        return ShadowSeries(np.empty(0, "datetime64[s]"), np.empty(0), np.empty(0))
    return ShadowSeries(np.concatenate(times), np.concatenate(shadow), np.concatenate(production))


# ---------------------------------------------------------------------------------------------
# Policy and start


# Read by every gate-passing training job: compiled once per process (clm_project.compiled).
_POLICY = CompiledQuery(
    lambda model_type: ShadowPolicy.objects.filter(model_type=model_type), model_type=str
)


def shadow_policy_for(model_type: str) -> ShadowPolicy:
    # model_type is unique: at most one row.
    return _POLICY.first(model_type=model_type) or ShadowPolicy.default_for(model_type)


def shadow_wanted(policy: ShadowPolicy, *, sharpe: float, production_sharpe: float) -> str | None:
    """Why a gate-passing version should shadow production first, or None (promote/candidate).

    The Sharpe ratios are both on the job's validation window: choosing the path is a selection,
    and the test window is kept for the promotion evaluation (docs/evaluation.md)."""
    if policy.mode == ShadowMode.ALL:
        return "every new version shadows production first"
    if policy.mode == ShadowMode.UNLESS_CLEARLY_BETTER:
        if sharpe >= production_sharpe + policy.clear_margin:
            return None
        return (
            f"validation Sharpe {sharpe:.3f} does not clearly beat production's "
            f"{production_sharpe:.3f} (margin {policy.clear_margin:g})"
        )
    return None


def shadow_start(
    *,
    model_id: str,
    version: int,
    actor: str,
    reason: str = "",
    auto_promote: bool | None = None,
    from_training: bool = False,
) -> ShadowComparison:
    """Put a version in shadow against the current production version and open its comparison.

    A candidate (or a shadow version without a comparison) may start; `from_training` lets the
    pipeline start one that has just passed its gates. One transaction: the status change (with
    its audit row) and the comparison commit together.
    """
    with transaction.atomic():
        model = model_lock(model_id=model_id)
        target = ModelVersion.objects.filter(model=model, version=version).first()
        if target is None:
            raise NotFound(f"model {model_id} has no version {version}")
        production = ModelVersion.objects.filter(model=model, status=ModelStatus.PRODUCTION).first()
        if production is None:
            raise DomainError(f"{model_id} has no production version to shadow")
        allowed = (*SHADOWABLE, ModelStatus.TRAINING) if from_training else SHADOWABLE
        if target.status not in allowed:
            raise DomainError(
                f"cannot shadow {model_id} v{version}: it is {target.status}; only candidate or "
                "shadow versions can shadow production"
            )
        if target.shadow_comparisons.filter(status=ComparisonStatus.ACTIVE).exists():
            raise DomainError(f"{model_id} v{version} is already being shadowed")
        if not target.artifact_path:
            raise DomainError(f"{model_id} v{version} has no artifact to paper-trade")
        if target.status != ModelStatus.SHADOW:
            services.model_version_set_status(
                model_id=model_id, version=version, status=ModelStatus.SHADOW, actor=actor,
                reason=reason or f"shadows production v{production.version}",
            )  # fmt: skip
        policy = shadow_policy_for(model.model_type)
        design = dict(
            min_bars=policy.min_bars, max_bars=policy.max_bars, looks=policy.looks,
            alpha=policy.alpha, spending=policy.spending,
        )  # fmt: skip
        sequential_design(**design)  # refuses a design it cannot plan before anything is written
        try:
            with transaction.atomic():
                comparison = ShadowComparison.objects.create(
                    model=model,
                    shadow=target,
                    production=production,
                    started_by=actor,
                    reason=reason,
                    start_after=shadow_start_after(model, target, production),
                    fee=evaluation_policy_for(model.model_type, auto_promote_default=True).fee,
                    periods_per_year=stored_periods_per_year(
                        symbol=model.symbol, timeframe=model.timeframe
                    ),
                    auto_promote=policy.auto_promote if auto_promote is None else auto_promote,
                    min_trades=policy.min_trades,
                    **design,
                )
        except IntegrityError:
            raise DomainError(f"{model_id} v{version} is already being shadowed") from None
    return comparison


def shadow_stop(*, comparison_id: int, actor: str, reason: str = "") -> ShadowComparison:
    """End a comparison by hand; the version goes back to candidate (with its audit row)."""
    with transaction.atomic():
        comparison = _lock_comparison(comparison_id)
        if comparison.status != ComparisonStatus.ACTIVE:
            raise DomainError(f"shadow comparison {comparison_id} is already {comparison.status}")
        why = f"stopped by {actor or 'unknown'}" + (f": {reason}" if reason else "")
        _finish(comparison, ShadowDecision.STOPPED, why, status=ComparisonStatus.STOPPED)
        shadow = comparison.shadow
        if shadow.status == ModelStatus.SHADOW:
            services.model_version_set_status(
                model_id=comparison.model.model_id, version=shadow.version,
                status=ModelStatus.CANDIDATE, actor=actor, reason=f"shadow comparison {why}",
            )  # fmt: skip
    return comparison


def _lock_comparison(comparison_id: int) -> ShadowComparison:
    """Lock the comparison's model row, then the comparison: the order every writer of a model's
    versions uses (registry.services locks the model first), so two writers never deadlock."""
    return row_lock_under_model(
        ShadowComparison.objects.all(),
        comparison_id,
        what="shadow comparison",
        related=("model", "shadow", "production"),
    )


def _finish(
    comparison: ShadowComparison,
    decision: str,
    reason: str,
    *,
    status: str = ComparisonStatus.COMPLETED,
) -> None:
    comparison.status = status
    comparison.decision = decision
    comparison.reason = reason
    comparison.ended_at = timezone.now()
    comparison.save(update_fields=["status", "decision", "reason", "ended_at"])


# ---------------------------------------------------------------------------------------------
# Evaluation steps


@dataclass(frozen=True)
class StepOutcome:
    """What the test says at one evaluation step (pure: no database).

    `look` is the last planned look taken at this step (1-based; None between looks) and `test`
    its test; between looks `test` is the whole series against the next look's boundary, for the
    record only. `looks_done` counts the looks taken so far.
    """

    decision: str
    reason: str
    look: int | None
    looks_done: int
    tested_bars: int
    test: PairedTest | None
    shadow_trades: int
    production_trades: int


def decide(
    *,
    shadow: np.ndarray,
    production: np.ndarray,
    close: np.ndarray,
    shadow_positions: np.ndarray,
    production_positions: np.ndarray,
    design: SequentialDesign,
    looks_done: int,
    min_trades: int,
) -> StepOutcome:
    """Take every planned look the series has reached and not yet taken, in order, on exactly its
    first n_k bars, stopping at a crossing. A look where the shadow version has made fewer than
    `min_trades` trades is passed over, which can only make a false promotion less likely; at
    the last look that means retirement."""
    n, total = len(shadow), len(design.looks)
    k = looks_done
    taken: tuple[int, PairedTest, int, int, str] | None = None
    while k < total and design.looks[k] <= n:
        n_k, c_k = design.looks[k], design.boundaries[k]
        test = diebold_mariano(shadow[:n_k], production[:n_k], critical=c_k)
        trades = trades_of(close[:n_k], shadow_positions[:n_k])
        prod_trades = trades_of(close[:n_k], production_positions[:n_k])
        where = f"look {k + 1}/{total} at {n_k} bars"
        k += 1
        final: tuple[str, str] | None = None
        if trades < min_trades:
            note = f"{where}: only {trades} trades, fewer than the {min_trades} required"
            if k == total:
                final = (ShadowDecision.RETIRE, f"{note} by the maximum duration")
            taken = (k, test, trades, prod_trades, f"{note}, passed over")
        elif test.rejects:
            final = (ShadowDecision.PROMOTE, f"{where}: better than production")
        elif k == total:
            final = (ShadowDecision.RETIRE, f"{where} (the maximum duration): not proved better")
        else:
            taken = (k, test, trades, prod_trades, f"{where}: not proved better yet")
        if final is not None:
            decision, note = final
            return StepOutcome(
                decision, f"{note}; {_summary(test)}", k, k, n_k, test, trades, prod_trades
            )
    following = f"next decision at {design.looks[k]} bars"
    if taken is not None:
        look, test, trades, prod_trades, note = taken
        reason = f"{note}; {following}; {_summary(test)}"
        return StepOutcome(
            ShadowDecision.CONTINUE, reason, look, k, design.looks[look - 1], test, trades,
            prod_trades,
        )  # fmt: skip
    latest = diebold_mariano(shadow, production, critical=design.boundaries[k]) if n >= 3 else None
    trades = trades_of(close, shadow_positions)
    reason = f"{n} bars, {trades} trades; {following}"
    if latest is not None:
        reason = f"{reason}; {_summary(latest)}"
    return StepOutcome(
        ShadowDecision.CONTINUE, reason, None, k, n, latest, trades,
        trades_of(close, production_positions),
    )  # fmt: skip


def _summary(test: PairedTest) -> str:
    return (
        f"DM statistic {test.statistic:.3f} vs boundary {test.critical:.3f}, one-sided p = "
        f"{test.p_value:.4f}, mean difference {test.estimate:+.3e} per bar "
        f"[{test.ci_low:+.3e}, {test.ci_high:+.3e}]"
    )


def shadow_evaluate(*, comparison_id: int) -> ShadowObservation | None:
    """One evaluation step of an active comparison; None when there is nothing new to record.

    The paper trading runs outside any transaction; the step is written in one short transaction
    that first checks nobody else took it (compare-and-set on the bar count).
    """
    comparison = (
        ShadowComparison.objects.select_related("model", "shadow", "production")
        .filter(pk=comparison_id, status=ComparisonStatus.ACTIVE)
        .first()
    )
    if comparison is None:
        return None
    if comparison.shadow.status != ModelStatus.SHADOW:
        _end_outside(
            comparison, ShadowDecision.STOPPED,
            f"v{comparison.shadow.version} left shadow (now {comparison.shadow.status})",
        )  # fmt: skip
        return None
    if comparison.production.status != ModelStatus.PRODUCTION:
        _end_outside(
            comparison, ShadowDecision.SUPERSEDED,
            f"production v{comparison.production.version} is now "
            f"{comparison.production.status}; v{comparison.shadow.version} will be compared "
            "with the new production version",
        )  # fmt: skip
        return None

    trades = paper_trade(
        [comparison.shadow, comparison.production], after=comparison.start_after, fee=comparison.fee
    )
    n_prev = comparison.n_bars
    if len(trades) <= n_prev:
        return None
    stored = shadow_series(comparison)
    shadow_all = np.concatenate([stored.shadow, trades.returns[comparison.shadow_id][n_prev:]])
    prod_all = np.concatenate(
        [stored.production, trades.returns[comparison.production_id][n_prev:]]
    )
    design = sequential_design(
        min_bars=comparison.min_bars, max_bars=comparison.max_bars, looks=comparison.looks,
        alpha=comparison.alpha, spending=comparison.spending,
    )  # fmt: skip
    outcome = decide(
        shadow=shadow_all,
        production=prod_all,
        close=trades.close,
        shadow_positions=trades.positions[comparison.shadow_id],
        production_positions=trades.positions[comparison.production_id],
        design=design,
        looks_done=comparison.looks_done,
        min_trades=comparison.min_trades,
    )
    return _record_step(comparison, trades, n_prev, shadow_all, prod_all, outcome)


def _end_outside(comparison: ShadowComparison, decision: str, reason: str) -> None:
    """The versions changed outside the comparison: end it, leave their statuses alone."""
    with transaction.atomic():
        locked = _lock_comparison(comparison.pk)
        if locked.status == ComparisonStatus.ACTIVE:
            _finish(locked, decision, reason)


def _record_step(
    comparison: ShadowComparison,
    trades: PaperTrades,
    n_prev: int,
    shadow_all: np.ndarray,
    prod_all: np.ndarray,
    outcome: StepOutcome,
) -> ShadowObservation | None:
    """Store one step (observation and running figures) and carry out its decision, all under the
    comparison's row lock; None when another step got there first or the versions changed."""
    with transaction.atomic():
        locked = _lock_comparison(comparison.pk)
        if _stale(locked, n_prev):  # the next run decides
            return None
        decision, reason, promotion = _promotion_of(locked, outcome)
        figures = _step_figures(outcome.test, shadow_all, prod_all, locked.periods_per_year)
        new = slice(n_prev, len(shadow_all))
        observation = ShadowObservation.objects.create(
            comparison=locked,
            first_bar_at=as_datetime(trades.timestamps[new.start]),
            last_bar_at=as_datetime(trades.timestamps[new.stop - 1]),
            n_new=new.stop - new.start,
            n_bars=len(shadow_all),
            bar_times=pack_times(trades.timestamps[new]),
            shadow_returns=pack_floats(shadow_all[new]),
            production_returns=pack_floats(prod_all[new]),
            shadow_trades=outcome.shadow_trades,
            production_trades=outcome.production_trades,
            look=outcome.look,
            tested_bars=outcome.tested_bars,
            se=outcome.test.se if outcome.test else None,
            boundary=outcome.test.critical if outcome.test else None,
            decision=decision,
            reason=reason,
            **figures,
        )
        locked.n_bars = len(shadow_all)
        locked.last_bar_at = observation.last_bar_at
        locked.shadow_trades = outcome.shadow_trades
        locked.production_trades = outcome.production_trades
        locked.looks_done = outcome.looks_done
        for name, value in figures.items():
            setattr(locked, name, value)
        locked.last_error = ""
        locked.save()
        model_id, version = comparison.model.model_id, locked.shadow.version
        if promotion is not None:
            enact(promotion, model_id=model_id, version=version, actor=ACTOR)
        elif decision == ShadowDecision.RETIRE:
            services.model_version_set_status(
                model_id=model_id, version=version, status=ModelStatus.RETIRED, actor=ACTOR,
                reason=f"shadow comparison {locked.pk}: {reason}",
            )  # fmt: skip
        if decision != ShadowDecision.CONTINUE:
            _finish(locked, decision, reason)
    return observation


def _stale(locked: ShadowComparison, n_prev: int) -> bool:
    """Another step got here first, or either version is no longer what the comparison tests."""
    return (
        locked.status != ComparisonStatus.ACTIVE
        or locked.n_bars != n_prev
        or ModelVersion.objects.get(pk=locked.shadow_id).status != ModelStatus.SHADOW
        or ModelVersion.objects.get(pk=locked.production_id).status != ModelStatus.PRODUCTION
    )


def _promotion_of(
    locked: ShadowComparison, outcome: StepOutcome
) -> tuple[str, str, Decision | None]:
    """(the step's decision, its reason, the promotion decision to enact): a shadow version the
    test found better is promoted or kept as a ready candidate by the one promotion decision."""
    if outcome.decision != ShadowDecision.PROMOTE:
        return outcome.decision, outcome.reason, None
    promotion = decide_promotion(
        basis=f"shadow comparison {locked.pk} against v{locked.production.version}: "
        f"{outcome.reason}",
        better=True,
        auto_promote=auto_promotion_on(locked.model.model_type, flag=locked.auto_promote),
    )
    if promotion.outcome == Outcome.PROMOTE:
        return ShadowDecision.PROMOTE, outcome.reason, promotion
    return ShadowDecision.READY, f"{outcome.reason}; auto-promotion is off", promotion


def _step_figures(
    test: PairedTest | None, shadow_all: np.ndarray, prod_all: np.ndarray, periods: float
) -> dict[str, float | None]:
    """The test's figures and both Sharpe ratios so far, stored on the step and the comparison."""
    return {
        "estimate": test.estimate if test else None,
        "statistic": test.statistic if test else None,
        "p_value": test.p_value if test else None,
        "ci_low": test.ci_low if test else None,
        "ci_high": test.ci_high if test else None,
        "shadow_sharpe": annualized_sharpe(shadow_all, periods),
        "production_sharpe": annualized_sharpe(prod_all, periods),
    }


def shadow_evaluate_all() -> dict[str, int]:
    """The whole pass in this process: open comparisons for shadow versions without one, then
    step each active comparison (a worker fans the steps out: training.promotion.tasks)."""
    counts = shadow_orphans_start()
    for comparison_id in shadow_active_ids():
        counts[shadow_step(comparison_id=comparison_id)] += 1
    return dict(counts)


def shadow_orphans_start() -> Counter[str]:
    """Open a comparison for each shadow version that has none (while production exists)."""
    counts: Counter[str] = Counter()
    orphans = (
        ModelVersion.objects.filter(status=ModelStatus.SHADOW)
        .exclude(shadow_comparisons__status=ComparisonStatus.ACTIVE)
        .filter(model__versions__status=ModelStatus.PRODUCTION)
        .select_related("model")
        .distinct()
    )
    for version in orphans:
        try:
            shadow_start(
                model_id=version.model.model_id, version=version.version, actor=ACTOR,
                reason="shadow version without an active comparison",
            )  # fmt: skip
            counts["started"] += 1
        except DomainError as exc:
            logger.warning("could not start shadowing %s: %s", version, exc.message)
            counts["failed"] += 1
    return counts


def shadow_active_ids() -> list[int]:
    return list(
        ShadowComparison.objects.filter(status=ComparisonStatus.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def shadow_step(*, comparison_id: int) -> str:
    """One comparison's step; returns its decision ("unchanged" without new bars, "failed").
    One model's trouble is logged on its comparison and never stops the others."""
    try:
        observation = shadow_evaluate(comparison_id=comparison_id)
    except Exception as exc:  # a broken artifact or bad bars for one model
        logger.exception("shadow step of comparison %s failed", comparison_id)
        ShadowComparison.objects.filter(pk=comparison_id).update(
            last_error=f"{exc.__class__.__name__}: {exc}"[:2_000]
        )
        return "failed"
    return observation.decision if observation else "unchanged"


# ---------------------------------------------------------------------------------------------
# Reads


def shadow_comparisons_list(
    *,
    model_id: str | None = None,
    version: int | None = None,
    status: str | None = None,
    decision: str | None = None,
) -> QuerySet[ShadowComparison]:
    qs = ShadowComparison.objects.select_related("model", "shadow", "production")
    if model_id:
        qs = qs.filter(model__model_id=model_id)
    if version is not None:
        qs = qs.filter(shadow__version=version)
    if status:
        qs = qs.filter(status=status)
    if decision:
        qs = qs.filter(decision=decision)
    return qs.order_by("-created_at", "-id")


def shadow_comparison_get(*, comparison_id: int) -> ShadowComparison:
    try:
        return ShadowComparison.objects.select_related("model", "shadow", "production").get(
            pk=comparison_id
        )
    except ShadowComparison.DoesNotExist:
        raise NotFound(f"unknown shadow comparison {comparison_id}") from None


def shadow_design(comparison: ShadowComparison) -> SequentialDesign:
    return sequential_design(
        min_bars=comparison.min_bars, max_bars=comparison.max_bars, looks=comparison.looks,
        alpha=comparison.alpha, spending=comparison.spending,
    )  # fmt: skip
