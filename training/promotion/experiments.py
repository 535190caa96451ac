"""A/B experiments: capital split between production and candidates of the same model.

Trading services read the split (`allocation_get`, GET /clm/models/{model_id}/allocation) and may
report each arm's realised per-bar returns (`results_record`, POST .../results); an experiment whose
returns come from bars has CLM paper-trade every arm on the bars instead (the promotion package's
paper trading, the promotion policy's fee). A periodic task (`training.experiments_evaluate`)
takes evaluation steps: the bars where every arm has a return are paired, and each candidate is
tested against production (training.evaluation.stats: Diebold-Mariano for mean_return,
Ledoit-Wolf for sharpe) at level alpha / (number of candidates), Bonferroni, so the chance of
declaring any equally good candidate a winner stays at most alpha.

Stopping rules: fixed_horizon decides once, on the first min_bars paired bars; group_sequential
decides at `looks` planned points from min_bars to max_bars with alpha-spending boundaries, and
stops at the first look where a candidate is significantly better. The winner (the best
significant candidate) is promoted through registry.services.model_version_promote when
auto-promotion is on; with no winner production stays. The verdict carries the estimate, statistic,
p-value and interval of the winner (or of the best candidate).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from registry.locks import model_lock, row_lock_under_model
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from training.data.selectors import stored_periods_per_year
from training.evaluation.stats import PairedTest, SequentialDesign, paired_test, sequential_design
from training.models import Bar
from training.promotion.decision import Decision, Outcome, auto_promotion_on, enact
from training.promotion.decision import decide as decide_promotion
from training.promotion.models import (
    AlphaSpending,
    ArmRole,
    Experiment,
    ExperimentArm,
    ExperimentDecision,
    ExperimentEvaluation,
    ExperimentMetric,
    ExperimentStatus,
    RealisedReturn,
    ReturnSource,
    StoppingRule,
)
from training.promotion.paper import annualized_sharpe, latest_bar_at, paper_trade
from training.promotion.policies import evaluation_policy_for

logger = logging.getLogger(__name__)

ACTOR = "experiment"
CANDIDATE_STATUSES = (ModelStatus.CANDIDATE, ModelStatus.SHADOW)
WEIGHT_TOLERANCE = 1e-6
MIN_BARS = 20
MAX_RESULTS_PER_REQUEST = 10_000
MISSING_SHOWN = 5


@dataclass(frozen=True)
class ArmRequest:
    version: int
    weight: float


@dataclass(frozen=True)
class ResultRow:
    version: int
    timestamp: datetime
    value: float


# ---------------------------------------------------------------------------------------------
# Start and stop


def experiment_start(
    *,
    model_id: str,
    arms: list[ArmRequest],
    actor: str,
    metric: str = ExperimentMetric.SHARPE,
    stopping_rule: str = StoppingRule.GROUP_SEQUENTIAL,
    min_bars: int = 500,
    max_bars: int | None = None,
    looks: int = 4,
    alpha: float = 0.05,
    spending: str = AlphaSpending.OBRIEN_FLEMING,
    returns_source: str = ReturnSource.REPORTED,
    auto_promote: bool = True,
    description: str = "",
) -> Experiment:
    """Start an experiment; every check happens before anything is written, in one transaction.

    400: bad weights (each in (0, 1], summing to 1), duplicate arms, no production arm, a bad
    design. 404: unknown model or version. 409: a running experiment for the model, no production
    version, a candidate that cannot be promoted.
    """
    _check_arms(arms)
    max_bars = min_bars if max_bars is None else max_bars
    _check_design(metric, stopping_rule, returns_source, min_bars, max_bars, looks, alpha, spending)
    with transaction.atomic():
        model = model_lock(model_id=model_id)
        if Experiment.objects.filter(model=model, status=ExperimentStatus.RUNNING).exists():
            raise DomainError(f"{model_id} already has a running experiment")
        versions = _versions(model, [arm.version for arm in arms])
        production = next(
            (v for v in versions.values() if v.status == ModelStatus.PRODUCTION), None
        )
        if production is None:
            current = ModelVersion.objects.filter(
                model=model, status=ModelStatus.PRODUCTION
            ).first()
            if current is None:
                raise DomainError(f"{model_id} has no production version to experiment against")
            raise InvalidInput(
                f"the arms must include the production version v{current.version}", field="arms"
            )
        for version in versions.values():
            if version is not production and version.status not in CANDIDATE_STATUSES:
                raise DomainError(
                    f"{model_id} v{version.version} is {version.status}; candidate arms must be "
                    f"{' or '.join(CANDIDATE_STATUSES)}"
                )
        try:
            with transaction.atomic():
                experiment = Experiment.objects.create(
                    model=model,
                    description=description,
                    metric=metric,
                    stopping_rule=stopping_rule,
                    returns_source=returns_source,
                    min_bars=min_bars,
                    max_bars=max_bars,
                    looks=looks,
                    alpha=alpha,
                    spending=spending,
                    auto_promote=auto_promote,
                    fee=evaluation_policy_for(model.model_type, auto_promote_default=True).fee,
                    periods_per_year=stored_periods_per_year(
                        symbol=model.symbol, timeframe=model.timeframe
                    ),
                    start_after=latest_bar_at(model.symbol, model.timeframe) or timezone.now(),
                    created_by=actor,
                )
                ExperimentArm.objects.bulk_create(
                    ExperimentArm(
                        experiment=experiment,
                        version=versions[arm.version],
                        role=ArmRole.CONTROL
                        if versions[arm.version] is production
                        else ArmRole.CANDIDATE,
                        weight=arm.weight,
                    )
                    for arm in arms
                )
        except IntegrityError:  # a concurrent start won the one-running-experiment constraint
            raise DomainError(f"{model_id} already has a running experiment") from None
    return experiment


def _check_arms(arms: list[ArmRequest]) -> None:
    if len(arms) < 2:
        raise InvalidInput(
            "an experiment needs production and at least one candidate", field="arms"
        )
    numbers = [arm.version for arm in arms]
    if len(set(numbers)) != len(numbers):
        raise InvalidInput("each version may appear in one arm only", field="arms")
    for arm in arms:
        if not (math.isfinite(arm.weight) and 0.0 < arm.weight <= 1.0):
            raise InvalidInput(
                f"the weight of v{arm.version} is {arm.weight}; each weight must be in (0, 1]",
                field="arms",
            )
    total = math.fsum(arm.weight for arm in arms)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInput(f"the weights sum to {total:.6g}; they must sum to 1", field="arms")


def _check_design(
    metric: str,
    stopping_rule: str,
    returns_source: str,
    min_bars: int,
    max_bars: int,
    looks: int,
    alpha: float,
    spending: str,
) -> None:
    for value, choices, field in (
        (metric, ExperimentMetric, "metric"),
        (stopping_rule, StoppingRule, "stopping_rule"),
        (returns_source, ReturnSource, "returns_source"),
        (spending, AlphaSpending, "spending"),
    ):
        if value not in choices.values:
            raise InvalidInput(f"unknown {field} {value!r}", field=field)
    if min_bars < MIN_BARS:
        raise InvalidInput(f"min_bars must be at least {MIN_BARS}", field="min_bars")
    if max_bars < min_bars:
        raise InvalidInput("max_bars must be at least min_bars", field="max_bars")
    if not 1 <= looks <= 20:
        raise InvalidInput("looks must be between 1 and 20", field="looks")
    if not 0.0 < alpha < 0.5:
        raise InvalidInput("alpha must be in (0, 0.5)", field="alpha")


def _versions(model: RegisteredModel, numbers: list[int]) -> dict[int, ModelVersion]:
    found = {v.version: v for v in ModelVersion.objects.filter(model=model, version__in=numbers)}
    missing = sorted(set(numbers) - set(found))
    if missing:
        raise NotFound(
            f"model {model.model_id} has no version {', '.join(str(n) for n in missing)}"
        )
    return found


def experiment_stop(*, experiment_id: int, actor: str, reason: str = "") -> Experiment:
    """End a running experiment by hand: its verdict is the latest step's, nothing is promoted."""
    with transaction.atomic():
        experiment = _lock_experiment(experiment_id)
        if experiment.status != ExperimentStatus.RUNNING:
            raise DomainError(f"experiment {experiment_id} is already {experiment.status}")
        why = f"stopped by {actor or 'unknown'}" + (f": {reason}" if reason else "")
        latest = experiment.evaluations.order_by("-id").first()
        if latest is not None and latest.reason:
            why = f"{why}; latest step: {latest.reason}"
        _finish(experiment, ExperimentDecision.STOPPED, why, status=ExperimentStatus.STOPPED)
    return experiment


def _lock_experiment(experiment_id: int) -> Experiment:
    """Lock the experiment's model row, then the experiment (the services' lock order)."""
    return row_lock_under_model(Experiment.objects.all(), experiment_id, what="experiment")


def _finish(
    experiment: Experiment,
    decision: str,
    reason: str,
    *,
    status: str = ExperimentStatus.COMPLETED,
    verdict: dict[str, Any] | None = None,
    winner: ModelVersion | None = None,
) -> None:
    experiment.status = status
    experiment.decision = decision
    experiment.reason = reason
    experiment.ended_at = timezone.now()
    experiment.winner = winner
    for name, value in (verdict or {}).items():
        setattr(experiment, name, value)
    experiment.save()


# ---------------------------------------------------------------------------------------------
# Allocation and reported results


@dataclass(frozen=True)
class Allocation:
    model_id: str
    experiment: Experiment | None
    arms: list[dict[str, Any]]
    as_of: datetime


def allocation_get(*, model_id: str) -> Allocation:
    """How a trading service splits the model's capital now: the running experiment's weights,
    or all of it on production."""
    model = RegisteredModel.objects.filter(model_id=model_id).first()
    if model is None:
        raise NotFound(f"unknown model {model_id!r}")
    experiment = (
        Experiment.objects.filter(model=model, status=ExperimentStatus.RUNNING)
        .prefetch_related("arms__version")
        .first()
    )
    if experiment is not None:
        arms = [
            _arm_allocation(arm.version, arm.role, arm.weight)
            for arm in sorted(experiment.arms.all(), key=lambda a: (a.role != "control", -a.weight))
        ]
    else:
        production = ModelVersion.objects.filter(model=model, status=ModelStatus.PRODUCTION).first()
        if production is None:
            raise NotFound(f"model {model_id!r} has no production version")
        arms = [_arm_allocation(production, ArmRole.CONTROL, 1.0)]
    return Allocation(model_id=model_id, experiment=experiment, arms=arms, as_of=timezone.now())


def _arm_allocation(version: ModelVersion, role: str, weight: float) -> dict[str, Any]:
    return {
        "version": version.version,
        "role": role,
        "status": version.status,
        "weight": weight,
        "artifact_sha256": version.artifact_sha256,
    }


def results_record(
    *,
    model_id: str,
    rows: list[ResultRow],
    actor: str,
    experiment_id: int | None = None,
) -> tuple[int, Experiment | None]:
    """Store realised per-bar returns reported by a trading service: all of them or none.

    404: unknown model, experiment (or one of another model) or version. 409: the experiment is
    not running, or a version is neither production nor an arm of it. 400: the same version and
    bar twice, or bars that do not exist for the model's symbol and timeframe. A bar reported
    again replaces its earlier value. Returns (rows stored, the experiment they count for).
    """
    if not rows:
        raise InvalidInput("no results given", field="results")
    if len(rows) > MAX_RESULTS_PER_REQUEST:
        raise InvalidInput(
            f"at most {MAX_RESULTS_PER_REQUEST} results per request", field="results"
        )
    model = RegisteredModel.objects.filter(model_id=model_id).first()
    if model is None:
        raise NotFound(f"unknown model {model_id!r}")
    experiment = _reporting_experiment(model, experiment_id)
    versions = _versions(model, sorted({row.version for row in rows}))
    allowed = {v.pk for v in versions.values() if v.status == ModelStatus.PRODUCTION}
    if experiment is not None:
        allowed |= set(experiment.arms.values_list("version_id", flat=True))
    refused = sorted(n for n, v in versions.items() if v.pk not in allowed)
    if refused:
        where = f"in experiment {experiment.pk}" if experiment is not None else "in production"
        raise DomainError(
            f"{model_id} v{', v'.join(str(n) for n in refused)} is not trading {where}; "
            "results are taken for production and the running experiment's arms"
        )
    keys = [(row.version, row.timestamp) for row in rows]
    if len(set(keys)) != len(keys):
        raise InvalidInput("a version and bar appear twice in the results", field="results")
    _check_bars_exist(model, {row.timestamp for row in rows})
    try:
        with transaction.atomic():
            _upsert_reported(rows, versions, experiment)
    except IntegrityError:  # another request stored one of these bars first
        raise DomainError(
            "results for some of these bars were reported at the same time; send them again"
        ) from None
    logger.info("%s reported %d results for %s", actor, len(rows), model_id)
    return len(rows), experiment


def _upsert_reported(
    rows: list[ResultRow], versions: dict[int, ModelVersion], experiment: Experiment | None
) -> None:
    """Replace the bars reported before, add the others (a partial unique index, which Django's
    bulk upsert cannot name, keeps one reported return per version and bar)."""
    existing = {
        (r.version_id, r.timestamp): r
        for r in RealisedReturn.objects.select_for_update().filter(
            source=ReturnSource.REPORTED,
            version__in=list(versions.values()),
            timestamp__in={row.timestamp for row in rows},
        )
    }
    now = timezone.now()
    changed, added = [], []
    for row in rows:
        version = versions[row.version]
        old = existing.get((version.pk, row.timestamp))
        if old is not None:
            old.value, old.experiment, old.recorded_at = row.value, experiment, now
            changed.append(old)
        else:
            added.append(
                RealisedReturn(
                    version=version,
                    experiment=experiment,
                    source=ReturnSource.REPORTED,
                    timestamp=row.timestamp,
                    value=row.value,
                )
            )
    RealisedReturn.objects.bulk_update(
        changed, ["value", "experiment", "recorded_at"], batch_size=2_000
    )
    RealisedReturn.objects.bulk_create(added, batch_size=2_000)


def _reporting_experiment(model: RegisteredModel, experiment_id: int | None) -> Experiment | None:
    if experiment_id is None:
        return Experiment.objects.filter(model=model, status=ExperimentStatus.RUNNING).first()
    experiment = Experiment.objects.filter(pk=experiment_id, model=model).first()
    if experiment is None:
        raise NotFound(f"{model.model_id} has no experiment {experiment_id}")
    if experiment.status != ExperimentStatus.RUNNING:
        raise DomainError(f"experiment {experiment_id} is {experiment.status}; it takes no results")
    return experiment


def _check_bars_exist(model: RegisteredModel, moments: set[datetime]) -> None:
    found = set(
        Bar.objects.filter(
            symbol=model.symbol, timeframe=model.timeframe, timestamp__in=moments
        ).values_list("timestamp", flat=True)
    )
    missing = sorted(moments - found)
    if missing:
        shown = ", ".join(m.isoformat() for m in missing[:MISSING_SHOWN])
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise InvalidInput(
            f"no {model.symbol} {model.timeframe} bar at {shown}{more}; results are taken only "
            "for bars CLM has",
            field="results",
        )


# ---------------------------------------------------------------------------------------------
# Evaluation steps


@dataclass(frozen=True)
class PairedSeries:
    timestamps: np.ndarray
    control: np.ndarray
    candidates: dict[int, np.ndarray]  # version number -> returns on the same bars


def experiment_series(experiment: Experiment) -> PairedSeries:
    """Each arm's returns from the experiment's source on the bars after `start_after` where every
    arm has one, oldest first."""
    source = experiment.returns_source
    arms = list(experiment.arms.select_related("version"))
    per_arm: dict[int, dict[Any, float]] = {}
    for arm in arms:
        rows = RealisedReturn.objects.filter(
            version_id=arm.version_id, source=source, timestamp__gt=experiment.start_after
        )
        if source == ReturnSource.COMPUTED:
            rows = rows.filter(experiment=experiment)
        per_arm[arm.version_id] = dict(rows.values_list("timestamp", "value"))
    common = sorted(set.intersection(*(set(series) for series in per_arm.values())))
    times = np.array([np.datetime64(int(t.timestamp()), "s") for t in common], "datetime64[s]")
    control = next(arm for arm in arms if arm.role == ArmRole.CONTROL)
    return PairedSeries(
        timestamps=times,
        control=np.array([per_arm[control.version_id][t] for t in common]),
        candidates={
            arm.version.version: np.array([per_arm[arm.version_id][t] for t in common])
            for arm in arms
            if arm.role == ArmRole.CANDIDATE
        },
    )


def experiment_design(experiment: Experiment) -> SequentialDesign:
    """The looks and boundaries, at alpha / candidates for each comparison (Bonferroni)."""
    candidates = experiment.arms.filter(role=ArmRole.CANDIDATE).count()
    sequential = experiment.stopping_rule == StoppingRule.GROUP_SEQUENTIAL
    return sequential_design(
        min_bars=experiment.min_bars,
        max_bars=experiment.max_bars if sequential else experiment.min_bars,
        looks=experiment.looks if sequential else 1,
        alpha=experiment.alpha / max(candidates, 1),
        spending=experiment.spending,
    )


@dataclass(frozen=True)
class Verdict:
    decision: str  # "" while it goes on
    reason: str
    look: int | None
    looks_done: int
    tested_bars: int
    tests: dict[int, PairedTest]
    winner: int | None
    best: int | None


def judge(
    series: PairedSeries,
    *,
    design: SequentialDesign,
    looks_done: int,
    metric: str,
    periods_per_year: float,
) -> Verdict:
    """Take the looks the paired series has reached (pure). A look decides when a candidate
    crosses its boundary (the winner is the best of those that do), or at the last look."""
    n, total = len(series.control), len(design.looks)
    k = looks_done
    tests: dict[int, PairedTest] = {}
    tested = n
    look = None
    while k < total and design.looks[k] <= n:
        tested, critical = design.looks[k], design.boundaries[k]
        tests = _tests(series, tested, critical, metric, periods_per_year)
        k += 1
        look = k
        winners = [v for v, t in tests.items() if t.rejects]
        where = f"look {k}/{total} at {tested} bars"
        if winners:
            winner = max(winners, key=lambda v: tests[v].estimate)
            return Verdict(
                ExperimentDecision.PROMOTE,
                f"{where}: v{winner} beats production; {_summary(tests[winner], metric)}",
                look, k, tested, tests, winner, winner,
            )  # fmt: skip
        if k == total:
            best = _best(tests)
            return Verdict(
                ExperimentDecision.KEEP_PRODUCTION,
                f"{where} (the last): no candidate proved better; best v{best}: "
                f"{_summary(tests[best], metric)}",
                look, k, tested, tests, None, best,
            )  # fmt: skip
    if look is None and n >= 8:  # between looks: the record, against the next look's boundary
        tests = _tests(series, n, design.boundaries[min(k, total - 1)], metric, periods_per_year)
    leader = _best(tests) if tests else None
    upcoming = design.looks[min(k, total - 1)]
    reason = f"{n} paired bars; next decision at {upcoming} bars"
    if leader is not None:
        reason = f"{reason}; best v{leader}: {_summary(tests[leader], metric)}"
    return Verdict("", reason, look, k, tested, tests, None, leader)


def _tests(
    series: PairedSeries, n: int, critical: float, metric: str, periods_per_year: float
) -> dict[int, PairedTest]:
    return {
        version: paired_test(
            returns[:n],
            series.control[:n],
            metric=metric,
            periods_per_year=periods_per_year,
            critical=critical,
        )
        for version, returns in series.candidates.items()
    }


def _best(tests: dict[int, PairedTest]) -> int:
    return max(tests, key=lambda v: tests[v].statistic)


def _summary(test: PairedTest, metric: str) -> str:
    name = "Sharpe difference" if metric == ExperimentMetric.SHARPE else "mean difference per bar"
    return (
        f"{name} {test.estimate:+.4g} [{test.ci_low:+.4g}, {test.ci_high:+.4g}], statistic "
        f"{test.statistic:.3f} vs boundary {test.critical:.3f}, one-sided p = {test.p_value:.4f}"
    )


def experiment_evaluate(*, experiment_id: int) -> ExperimentEvaluation | None:
    """One evaluation step of a running experiment; None when there is nothing new."""
    experiment = (
        Experiment.objects.select_related("model")
        .filter(pk=experiment_id, status=ExperimentStatus.RUNNING)
        .first()
    )
    if experiment is None:
        return None
    arms = list(experiment.arms.select_related("version"))
    changed = _arms_changed(arms)
    if changed:
        with transaction.atomic():
            locked = _lock_experiment(experiment_id)
            if locked.status == ExperimentStatus.RUNNING:
                _finish(locked, ExperimentDecision.STOPPED, changed)
        return None
    if experiment.returns_source == ReturnSource.COMPUTED:
        _paper_trade_arms(experiment, arms)
    series = experiment_series(experiment)
    n_prev = experiment.n_bars
    if len(series.control) <= n_prev:
        return None
    verdict = judge(
        series,
        design=experiment_design(experiment),
        looks_done=experiment.looks_done,
        metric=experiment.metric,
        periods_per_year=experiment.periods_per_year,
    )
    return _record_step(experiment, series, n_prev, verdict)


def _arms_changed(arms: list[ExperimentArm]) -> str:
    """Why the experiment can no longer run as designed, or ''."""
    for arm in arms:
        version = arm.version
        if arm.role == ArmRole.CONTROL and version.status != ModelStatus.PRODUCTION:
            return f"production v{version.version} is now {version.status}"
        if arm.role == ArmRole.CANDIDATE and version.status not in CANDIDATE_STATUSES:
            return f"candidate v{version.version} is now {version.status}"
    return ""


def _paper_trade_arms(experiment: Experiment, arms: list[ExperimentArm]) -> None:
    """Compute every arm's returns on the bars after the start and store the new ones."""
    trades = paper_trade(
        [arm.version for arm in arms], after=experiment.start_after, fee=experiment.fee
    )
    if not len(trades):
        return
    stamps = [datetime.fromtimestamp(int(t), tz=UTC) for t in trades.timestamps.astype("int64")]
    stored = dict(
        RealisedReturn.objects.filter(experiment=experiment, source=ReturnSource.COMPUTED)
        .values_list("version_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    # Positions are causal and the models deterministic: a stored bar's return never changes, so
    # only the bars after the ones stored are added.
    rows = [
        RealisedReturn(
            version_id=arm.version_id,
            experiment=experiment,
            source=ReturnSource.COMPUTED,
            timestamp=stamp,
            value=float(value),
        )
        for arm in arms
        for stamp, value in list(zip(stamps, trades.returns[arm.version_id], strict=True))[
            stored.get(arm.version_id, 0) :
        ]
    ]
    RealisedReturn.objects.bulk_create(rows, ignore_conflicts=True, batch_size=5_000)


def _record_step(
    experiment: Experiment, series: PairedSeries, n_prev: int, verdict: Verdict
) -> ExperimentEvaluation | None:
    """Store one step (evaluation row, arm and experiment figures) and carry out its decision, all
    under the experiment's row lock; None when another step got there first or an arm changed."""
    with transaction.atomic():
        locked = _lock_experiment(experiment.pk)
        if locked.status != ExperimentStatus.RUNNING or locked.n_bars != n_prev:
            return None
        arms = list(locked.arms.select_related("version"))
        if _arms_changed(arms):
            return None
        decision, reason, promotion = _promotion_of(locked, verdict)
        evaluation = ExperimentEvaluation.objects.create(
            experiment=locked,
            n_bars=len(series.control),
            look=verdict.look,
            tested_bars=verdict.tested_bars,
            results=[
                {"version": version, **test.as_dict()} for version, test in verdict.tests.items()
            ],
            decision=decision or "continue",
            reason=reason,
        )
        _arms_update(arms, series, locked.periods_per_year)
        locked.n_bars = len(series.control)
        locked.looks_done = verdict.looks_done
        locked.reason = reason
        summary = _summary_of(verdict)
        for name, value in summary.items():
            setattr(locked, name, value)
        if not decision:
            locked.save()
            return evaluation
        winner = None
        if verdict.winner is not None:
            winner = next(a.version for a in arms if a.version.version == verdict.winner)
        _finish(locked, decision, reason, verdict=summary, winner=winner)
        if promotion is not None and promotion.outcome == Outcome.PROMOTE and verdict.winner:
            enact(promotion, model_id=locked.model.model_id, version=verdict.winner, actor=ACTOR)
    return evaluation


def _promotion_of(locked: Experiment, verdict: Verdict) -> tuple[str, str, Decision | None]:
    """(the step's decision, its reason, the promotion decision): a winner is promoted, or only
    named when auto-promotion is off, by the one promotion decision."""
    if verdict.decision != ExperimentDecision.PROMOTE:
        return verdict.decision, verdict.reason, None
    promotion = decide_promotion(
        basis=f"experiment {locked.pk} ({locked.metric}): {verdict.reason}",
        better=True,
        auto_promote=auto_promotion_on(locked.model.model_type, flag=locked.auto_promote),
    )
    if promotion.outcome == Outcome.PROMOTE:
        return ExperimentDecision.PROMOTE, verdict.reason, promotion
    return ExperimentDecision.WINNER, f"{verdict.reason}; auto-promotion is off", promotion


def _arms_update(arms: list[ExperimentArm], series: PairedSeries, periods: float) -> None:
    for arm in arms:
        control = arm.role == ArmRole.CONTROL
        returns = series.control if control else series.candidates[arm.version.version]
        arm.n_bars = len(returns)
        arm.mean_return = float(returns.mean())
        arm.sharpe = annualized_sharpe(np.concatenate([[0.0], returns]), periods)
        arm.save(update_fields=["n_bars", "mean_return", "sharpe"])


def _summary_of(verdict: Verdict) -> dict[str, float | None]:
    """The best candidate's test figures, kept on the experiment."""
    best = verdict.tests.get(verdict.best) if verdict.best is not None else None
    return {
        "estimate": best.estimate if best else None,
        "statistic": best.statistic if best else None,
        "p_value": best.p_value if best else None,
        "ci_low": best.ci_low if best else None,
        "ci_high": best.ci_high if best else None,
    }


def experiments_evaluate_all() -> dict[str, int]:
    """The whole pass in this process: one step of every running experiment, each on its own (a
    worker fans the steps out: training.promotion.tasks)."""
    counts: Counter[str] = Counter()
    for experiment_id in experiments_running_ids():
        counts[experiment_step(experiment_id=experiment_id)] += 1
    return dict(counts)


def experiments_running_ids() -> list[int]:
    return list(
        Experiment.objects.filter(status=ExperimentStatus.RUNNING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def experiment_step(*, experiment_id: int) -> str:
    """One experiment's step; returns its decision ("unchanged" without new bars, "failed")."""
    try:
        evaluation = experiment_evaluate(experiment_id=experiment_id)
    except Exception:  # a broken artifact or bad bars for one model
        logger.exception("step of experiment %s failed", experiment_id)
        return "failed"
    return evaluation.decision if evaluation else "unchanged"


# ---------------------------------------------------------------------------------------------
# Reads


def experiments_list(
    *, model_id: str | None = None, status: str | None = None, decision: str | None = None
) -> QuerySet[Experiment]:
    qs = Experiment.objects.select_related("model", "winner").prefetch_related("arms__version")
    if model_id:
        qs = qs.filter(model__model_id=model_id)
    if status:
        qs = qs.filter(status=status)
    if decision:
        qs = qs.filter(decision=decision)
    return qs.order_by("-created_at", "-id")


def experiment_get(*, experiment_id: int) -> Experiment:
    try:
        return (
            Experiment.objects.select_related("model", "winner")
            .prefetch_related("arms__version", "evaluations")
            .get(pk=experiment_id)
        )
    except Experiment.DoesNotExist:
        raise NotFound(f"unknown experiment {experiment_id}") from None
