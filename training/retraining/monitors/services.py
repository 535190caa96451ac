"""Run the monitors for each production model (or traded series), store results, raise triggers.

A monitor never raises for one model's bad data: the failure is stored as a report with status
`error` and the run goes on with the next model. A result over its threshold goes through the same
handler as the external event (training.retraining.triggers), which records what it caused.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
from django.db.models import QuerySet

from registry.artifacts import artifact_load
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from training.data.bars import as_datetime, as_datetime64, bars_last, load_bars
from training.data.features import build_dataset, validate_feature_spec
from training.data.selectors import stored_periods_per_year
from training.models import (
    DriftReport,
    MonitorStatus,
    PerformanceReport,
    RegimeState,
    RetrainPolicy,
    TriggerSource,
)
from training.promotion.policies import evaluation_policy_for
from training.retraining.monitors.drift import feature_drift
from training.retraining.monitors.performance import live_performance
from training.retraining.monitors.regime import RegimeParams, classify_regime
from training.retraining.triggers import (
    Origin,
    handle_drift_detected,
    handle_performance_degraded,
    handle_regime_change,
    retrain_policy_for,
)
from training.trainers import trainer_class

logger = logging.getLogger(__name__)

MAX_REFERENCE_ROWS = 10_000  # the most recent rows of the training window drift is measured on
MIN_CURRENT_ROWS = 50
MIN_LIVE_BARS = 50


Result = DriftReport | PerformanceReport | RegimeState


class InsufficientData(Exception):
    """Too few bars for a meaningful reading; stored as status insufficient_data."""


def production_versions() -> QuerySet[ModelVersion]:
    return (
        ModelVersion.objects.filter(status=ModelStatus.PRODUCTION)
        .select_related("model")
        .order_by("model__model_id")
    )


def traded_series() -> list[tuple[str, str]]:
    """Every (symbol, timeframe) some registered model trades."""
    return list(
        RegisteredModel.objects.values_list("symbol", "timeframe")
        .distinct()
        .order_by("symbol", "timeframe")
    )


# ---------------------------------------------------------------------------------------------
# Drift


def drift_monitor_run(*, version: ModelVersion) -> DriftReport:
    """Training window against the latest bars; over the threshold it raises drift_detected."""
    model = version.model
    policy = retrain_policy_for(model.model_type)
    report = DriftReport(
        model=model, version=version, threshold=policy.drift_threshold, status=MonitorStatus.OK
    )
    started = time.perf_counter()
    _run_safely(report, lambda: _measure_drift(report, version, policy))
    report.duration_ms = (time.perf_counter() - started) * 1000
    report.save()
    if report.drifted:
        result = handle_drift_detected(
            model.model_id,
            report.drift_score or 0.0,  # set whenever the report says drifted
            origin=_monitor_origin(drift_report_id=report.pk, version=version.version),
        )
        report.trigger = result.record
        report.save(update_fields=["trigger"])
    return report


def _measure_drift(report: DriftReport, version: ModelVersion, policy: RetrainPolicy) -> None:
    model = version.model
    if version.train_start is None or version.train_end is None:
        raise InsufficientData("the version records no training window")
    spec = validate_feature_spec(version.feature_spec or None)
    lookback = spec["lookback"]

    reference_bars = bars_last(
        model.symbol, model.timeframe, MAX_REFERENCE_ROWS + lookback, end=version.train_end
    )
    reference = build_dataset(reference_bars, spec)
    in_training = reference_bars.timestamp >= as_datetime64(version.train_start)
    if not in_training.any():
        raise InsufficientData("no bars of the training window are stored any more")
    reference_rows = reference.features[in_training]

    window = policy.drift_window_bars
    current_bars = bars_last(model.symbol, model.timeframe, window + lookback)
    current = build_dataset(current_bars, spec)
    after = np.flatnonzero(current_bars.timestamp > as_datetime64(version.train_end))[-window:]
    report.n_current = len(after)
    if len(after) < MIN_CURRENT_ROWS:
        raise InsufficientData(
            f"{len(after)} bars after the training window ended; drift needs {MIN_CURRENT_ROWS}"
        )
    result = feature_drift(
        reference_rows,
        current.features[after],
        reference.feature_names,
        psi_threshold=policy.psi_threshold,
        ks_alpha=policy.ks_alpha,
    )
    training_times = reference_bars.timestamp[in_training]
    report.reference_start = as_datetime(training_times[0])
    report.reference_end = as_datetime(training_times[-1])
    report.current_start = as_datetime(current_bars.timestamp[after[0]])
    report.current_end = as_datetime(current_bars.timestamp[after[-1]])
    report.n_reference = result.n_reference
    report.n_current = result.n_current
    report.features = {f.name: f.as_dict() for f in result.features}
    report.drifted_features = result.drifted_features
    report.drift_score = result.drift_score
    report.drifted = result.drift_score >= policy.drift_threshold


# ---------------------------------------------------------------------------------------------
# Live performance


def performance_monitor_run(*, version: ModelVersion) -> PerformanceReport:
    """Backtest the production model since training; below the Sharpe threshold is degraded."""
    model = version.model
    policy = retrain_policy_for(model.model_type)
    report = PerformanceReport(
        model=model, version=version, threshold=policy.sharpe_threshold, status=MonitorStatus.OK
    )
    _run_safely(report, lambda: _measure_performance(report, version, policy))
    report.save()
    if report.degraded:
        result = handle_performance_degraded(
            model.model_id,
            report.rolling_sharpe or 0.0,  # set whenever the report says degraded
            origin=_monitor_origin(performance_report_id=report.pk, version=version.version),
        )
        report.trigger = result.record
        report.save(update_fields=["trigger"])
    return report


def _measure_performance(
    report: PerformanceReport, version: ModelVersion, policy: RetrainPolicy
) -> None:
    model = version.model
    if version.train_end is None or not version.artifact_path:
        raise InsufficientData("the version records no training window or artifact")
    spec = validate_feature_spec(version.feature_spec or None)
    # From enough bars before the training end for the features' look-back, up to now.
    history = bars_last(model.symbol, model.timeframe, spec["lookback"] + 1, end=version.train_end)
    start = as_datetime(history.timestamp[0]) if len(history) else version.train_end
    bars = load_bars(model.symbol, model.timeframe, start, None)
    live = np.flatnonzero(bars.timestamp > as_datetime64(version.train_end))
    if len(live) < MIN_LIVE_BARS:
        raise InsufficientData(
            f"{len(live)} bars since the training window ended; the monitor needs {MIN_LIVE_BARS}"
        )
    window = slice(int(live[0]), len(bars))
    dataset = build_dataset(bars, spec)
    trainer = trainer_class(model.model_type).loads(
        artifact_load(path=version.artifact_path, sha256=version.artifact_sha256)
    )
    positions = trainer.positions(dataset, window)
    perf = live_performance(
        bars.close[window],
        positions,
        fee=evaluation_policy_for(model.model_type, auto_promote_default=True).fee,
        periods_per_year=stored_periods_per_year(symbol=model.symbol, timeframe=model.timeframe),
        window=policy.performance_window_bars,
    )
    report.window_start = as_datetime(bars.timestamp[window.start])
    report.window_end = as_datetime(bars.timestamp[-1])
    report.n_bars = perf.n_bars
    report.sharpe = perf.sharpe
    report.rolling_sharpe = perf.rolling_sharpe
    report.rolling_window = perf.rolling_window
    report.max_drawdown = perf.max_drawdown
    report.total_return = perf.total_return
    report.trades = perf.trades
    report.exposure = perf.exposure
    report.degraded = perf.rolling_sharpe < policy.sharpe_threshold


# ---------------------------------------------------------------------------------------------
# Regime


def regime_monitor_run(
    *, symbol: str, timeframe: str, params: RegimeParams | None = None
) -> RegimeState:
    """Classify the series' regime; a change to a confirmed new regime raises regime_change.

    The first reading of a series is its baseline and raises nothing.
    """
    params = params or RegimeParams()
    previous = (
        RegimeState.objects.filter(symbol=symbol, timeframe=timeframe, status=MonitorStatus.OK)
        .order_by("-created_at", "-id")
        .first()
    )
    state = RegimeState(
        symbol=symbol,
        timeframe=timeframe,
        status=MonitorStatus.OK,
        previous_regime=previous.regime if previous else "",
    )
    _run_safely(state, lambda: _classify(state, params))
    state.save()
    if state.changed:
        handle_regime_change(
            state.regime,
            symbol=symbol,
            timeframe=timeframe,
            origin=_monitor_origin(regime_state_id=state.pk, previous_regime=state.previous_regime),
        )
    return state


def _classify(state: RegimeState, params: RegimeParams) -> None:
    bars = bars_last(state.symbol, state.timeframe, params.history + params.min_bars)
    if len(bars) < params.min_bars:
        raise InsufficientData(f"{len(bars)} bars; the classifier needs {params.min_bars}")
    reading = classify_regime(bars.close, params)
    state.as_of = as_datetime(bars.timestamp[-1])
    state.observed = reading.regime
    state.metrics = {**reading.metrics(), "stable": reading.stable}
    if not state.previous_regime:
        state.regime = reading.regime
    elif reading.stable:
        state.regime = reading.regime
        state.changed = reading.regime != state.previous_regime
    else:
        state.regime = state.previous_regime
    state.trend, _, state.volatility = state.regime.partition(":")


# ---------------------------------------------------------------------------------------------
# Runs over every model


# Each pass runs whole in one process (`*_run_all`), or a worker fans it out as one task per
# production version or series (training.tasks), each calling the `*_step` of its item.


def drift_monitor_run_all() -> dict[str, int]:
    return _sum(drift_monitor_step(version_id=pk) for pk in production_version_ids())


def performance_monitor_run_all() -> dict[str, int]:
    return _sum(performance_monitor_step(version_id=pk) for pk in production_version_ids())


def regime_monitor_run_all() -> dict[str, int]:
    return _sum(regime_monitor_step(symbol=s, timeframe=t) for s, t in traded_series())


def production_version_ids() -> list[int]:
    return list(production_versions().values_list("pk", flat=True))


def drift_monitor_step(*, version_id: int) -> dict[str, int]:
    return _step(version_id, drift_monitor_run, "drifted")


def performance_monitor_step(*, version_id: int) -> dict[str, int]:
    return _step(version_id, performance_monitor_run, "degraded")


def regime_monitor_step(*, symbol: str, timeframe: str) -> dict[str, int]:
    return _counted(
        lambda: regime_monitor_run(symbol=symbol, timeframe=timeframe),
        "changed",
        label=f"{symbol} {timeframe}",
    )


def _step(version_id: int, run: Callable[..., Result], flag: str) -> dict[str, int]:
    """One production version's reading; a version no longer in production (promoted over or
    rolled back since the pass began) is skipped."""
    version = production_versions().filter(pk=version_id).first()
    if version is None:
        return {"skipped": 1}
    return _counted(lambda: run(version=version), flag, label=str(version))


def _counted(run: Callable[[], Result], flag: str, *, label: str) -> dict[str, int]:
    try:
        result = run()
    except Exception:  # a database hiccup for one model must not stop the others
        logger.exception("monitor failed for %s", label)
        return {"failed": 1}
    return {result.status: 1, flag: int(bool(getattr(result, flag)))}


def _sum(steps: Iterable[dict[str, int]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for step in steps:
        counts.update(step)
    return dict(counts)


# ---------------------------------------------------------------------------------------------
# Helpers


def _run_safely(result: Result, measure: Callable[[], None]) -> None:
    try:
        measure()
    except InsufficientData as exc:
        result.status = MonitorStatus.INSUFFICIENT_DATA
        result.detail = str(exc)
    except Exception as exc:
        logger.warning("monitor error for %s: %s", result, exc, exc_info=True)
        result.status = MonitorStatus.ERROR
        result.detail = f"{exc.__class__.__name__}: {exc}"
    if result.status != MonitorStatus.OK:
        for flag in ("drifted", "degraded", "changed"):
            if hasattr(result, flag):
                setattr(result, flag, False)


def _monitor_origin(**context) -> Origin:
    return Origin(source=TriggerSource.MONITOR, requested_by="monitor", context=context)
