"""Monitors: drift, live performance and regime, pure and as services that raise triggers."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.special import kolmogorov
from scipy.stats import ks_2samp

from registry import services
from registry.artifacts import artifact_load
from registry.models import JobStatus, ModelStatus, TrainingJob
from tests.training.evaluation.test_stats import clopper_pearson
from training.data.bars import bars_frame, bars_import, load_bars
from training.data.dataset import Bars
from training.data.features import build_dataset, validate_feature_spec
from training.data.synthetic import generate_bars
from training.evaluation.backtest import PERIODS_PER_YEAR, backtest
from training.models import RetrainPolicy, TriggerRecord
from training.pipeline import run_job
from training.promotion.models import PromotionPolicy
from training.retraining.monitors import services as monitors
from training.retraining.monitors.drift import PSI_FLOOR, autocorrelation_time, feature_drift
from training.retraining.monitors.performance import live_performance, rolling_sharpe
from training.retraining.monitors.regime import RegimeParams, classify_regime
from training.trainers import trainer_class

# ---------------------------------------------------------------------------------------------
# Drift, pure


def test_windows_from_one_distribution_do_not_drift():
    rng = np.random.default_rng(0)
    result = feature_drift(rng.normal(size=(5_000, 5)), rng.normal(size=(2_000, 5)), list("abcde"))
    assert result.drift_score == 0.0 and result.drifted_features == []
    assert max(f.psi for f in result.features) < 0.02
    assert (result.n_reference, result.n_current) == (5_000, 2_000)


def test_psi_matches_a_hand_computation():
    # Deciles: 10 rows in each bin; shuffled, so the rows are not one long trend.
    reference = np.random.default_rng(3).permutation(np.arange(100.0)).reshape(-1, 1)
    current = np.array([95.0, 96, 97, 98, 99] * 4).reshape(-1, 1)  # all in the top bin
    [feature] = feature_drift(reference, current, ["x"]).features
    expected = 9 * (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1) + (1 - 0.1) * math.log(1 / 0.1)
    assert feature.psi == pytest.approx(expected)
    assert feature.ks == pytest.approx(0.95)  # F_ref(94) = 0.95, F_cur(94) = 0
    assert feature.drifted


def test_ks_matches_scipy_with_unequal_sizes_and_ties():
    rng = np.random.default_rng(1)
    reference = np.column_stack([rng.normal(size=900), rng.integers(0, 4, 900)])
    current = np.column_stack([rng.normal(0.3, 1.2, size=400), rng.integers(0, 5, 400)])
    result = feature_drift(reference.astype(float), current.astype(float), ["cont", "disc"])
    for j, feature in enumerate(result.features):
        expected = ks_2samp(reference[:, j], current[:, j]).statistic
        assert feature.ks == pytest.approx(expected, abs=1e-12)
        # Independent rows: the effective sizes are (nearly) the row counts.
        tau = feature.autocorrelation_time
        assert 1.0 <= tau < 1.5
        n_eff, m_eff = 900 / tau, 400 / tau
        effective = np.sqrt(n_eff * m_eff / (n_eff + m_eff))
        assert feature.ks_pvalue == pytest.approx(kolmogorov(effective * expected))


def test_a_feature_drifts_only_when_psi_is_large_and_ks_significant():
    rng = np.random.default_rng(5)
    few = feature_drift(rng.normal(size=(5_000, 1)), rng.normal(size=(12, 1)) + 0.6, ["x"])
    [feature] = few.features
    assert feature.psi > 0.2 and feature.ks_pvalue > 0.01 and not feature.drifted
    many = feature_drift(rng.normal(size=(5_000, 1)), rng.normal(size=(2_000, 1)) + 0.6, ["x"])
    assert many.features[0].drifted and many.drift_score == 1.0


def test_incomplete_rows_are_left_out_and_shapes_checked():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(300, 2))
    reference[:50] = np.nan  # the look-back rows of a feature matrix
    assert feature_drift(reference, rng.normal(size=(100, 2)), ["a", "b"]).n_reference == 250
    with pytest.raises(ValueError, match="features"):
        feature_drift(reference, rng.normal(size=(100, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="complete rows"):
        feature_drift(np.full((10, 2), np.nan), rng.normal(size=(100, 2)), ["a", "b"])


def test_autocorrelation_time_of_an_ar1_series_matches_its_formula():
    # For x_t = phi x_{t-1} + e_t the indicator of x_t <= median has (for a Gaussian AR(1))
    # lag-k correlation (2 / pi) arcsin(phi^k); summed, tau is about 3.2 at phi = 0.6.
    rng = np.random.default_rng(4)
    phi, n = 0.6, 40_000
    x = np.empty(n)
    x[0] = rng.normal()
    noise = rng.normal(size=n) * math.sqrt(1 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    expected = 1 + 2 * sum(2 / math.pi * math.asin(phi**k) for k in range(1, 200))
    [tau] = autocorrelation_time(x.reshape(-1, 1))
    assert tau == pytest.approx(expected, rel=0.1)
    assert autocorrelation_time(rng.normal(size=(5_000, 1)))[0] == pytest.approx(1.0, abs=0.1)


def _iid_market(n_bars: int, seed: int, *, vol_factor: float = 1.0, change_at: int = 0) -> Bars:
    """Bars whose log returns are i.i.d. Student-t; volatility times `vol_factor` from change_at."""
    rng = np.random.default_rng(seed)
    sigma = np.full(n_bars, 0.003)
    sigma[change_at:] *= vol_factor
    returns = rng.standard_t(5, n_bars) * math.sqrt(3 / 5) * sigma
    close = 30_000 * np.exp(np.cumsum(returns))
    volume = 1_000 * np.exp(0.3 * rng.normal(size=n_bars))
    stamps = np.datetime64("2024-01-01T00:00:00", "s") + np.arange(n_bars) * np.timedelta64(1, "h")
    return Bars(timestamp=stamps, open=close, high=close, low=close, close=close, volume=volume)


DRIFT_REFERENCE = 3_600  # a 150-day training window of 1h bars
DRIFT_CURRENT = RetrainPolicy().drift_window_bars  # 500


def _drift_readings(seeds: range, *, vol_factor: float = 1.0) -> np.ndarray:
    """One drift reading per seed at the defaults: 3,600 reference rows, a 1,000-bar gap, then
    the 500 current rows (in which volatility is `vol_factor` times the reference's). True where
    the reading reaches the default policy's drift threshold."""
    policy = RetrainPolicy()
    lookback = validate_feature_spec(None)["lookback"]
    n_bars = lookback + DRIFT_REFERENCE + 1_000 + DRIFT_CURRENT
    alarms = []
    for seed in seeds:
        # The shift starts a look-back before the window, so every current row sees only it.
        change_at = n_bars - DRIFT_CURRENT - lookback
        dataset = build_dataset(
            _iid_market(n_bars, seed, vol_factor=vol_factor, change_at=change_at)
        )
        result = feature_drift(
            dataset.features[lookback : lookback + DRIFT_REFERENCE],
            dataset.features[-DRIFT_CURRENT:],
            dataset.feature_names,
            psi_threshold=policy.psi_threshold,
            ks_alpha=policy.ks_alpha,
        )
        alarms.append(result.drift_score >= policy.drift_threshold)
    return np.array(alarms)


def test_drift_holds_its_false_alarm_rate_on_a_stationary_market():
    # i.i.d. returns: nothing drifts. Without the effective sample size, 26 % of such readings
    # raised drift (ma_dist_200 alone flagged 94 %). 300 readings: the 95 % Clopper-Pearson upper
    # bound of the false-alarm rate must stay under 5 %.
    alarms = _drift_readings(range(300))
    _, high = clopper_pearson(int(alarms.sum()), len(alarms))
    assert high < 0.05, f"{alarms.sum()} false alarms in {len(alarms)} readings"


def test_drift_detects_a_doubling_of_volatility():
    alarms = _drift_readings(range(1_000, 1_100), vol_factor=2.0)
    low, _ = clopper_pearson(int(alarms.sum()), len(alarms))
    assert low > 0.9, f"detected in {alarms.sum()} of {len(alarms)} readings"


# ---------------------------------------------------------------------------------------------
# Performance and regime, pure


def test_rolling_sharpe_is_the_metrics_sharpe_of_the_last_window():
    returns = np.array([-0.001, 0.01, -0.005, 0.02, 0.0])  # s[0] is the entry cost only
    tail = np.array([-0.005, 0.02, 0.0])
    expected = tail.mean() / tail.std(ddof=1) * math.sqrt(8760)
    assert rolling_sharpe(returns, window=3, periods_per_year=8760) == pytest.approx(expected)
    assert rolling_sharpe(np.zeros(10), window=5, periods_per_year=8760) == 0.0
    assert rolling_sharpe(np.array([0.0, 0.01]), window=5, periods_per_year=8760) == 0.0


def test_live_performance_uses_the_backtest_definitions():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    positions = np.sign(rng.normal(size=400))
    perf = live_performance(close, positions, fee=0.0005, periods_per_year=8760, window=100)
    full = backtest(close, positions, fee=0.0005, periods_per_year=8760)
    assert (perf.sharpe, perf.max_drawdown, perf.trades) == (
        full.sharpe, full.max_drawdown, full.trades,
    )  # fmt: skip
    assert perf.rolling_sharpe == rolling_sharpe(full.returns, window=100, periods_per_year=8760)
    assert perf.rolling_window == 100 and perf.n_bars == 400


def _prices(returns: np.ndarray) -> np.ndarray:
    return 100 * np.exp(np.cumsum(returns))


def test_regime_classifier_reads_trend_and_volatility():
    rng = np.random.default_rng(1)
    up = classify_regime(_prices(0.002 + 0.002 * rng.normal(size=1_500)))
    assert (up.trend, up.regime, up.stable) == ("uptrend", f"uptrend:{up.volatility}", True)
    down = classify_regime(_prices(-0.002 + 0.002 * rng.normal(size=1_500)))
    assert down.trend == "downtrend" and down.trend_t < -2
    burst = classify_regime(
        _prices(np.r_[0.001 * rng.normal(size=1_500), 0.01 * rng.normal(size=60)])
    )
    assert burst.regime == "range:high_vol" and burst.stable and burst.vol_rank > 0.95
    calm = classify_regime(
        _prices(np.r_[0.01 * rng.normal(size=1_500), 0.001 * rng.normal(size=100)])
    )
    assert calm.regime == "range:low_vol" and calm.stable


def test_a_regime_seen_for_fewer_than_confirm_bars_is_not_stable():
    rng = np.random.default_rng(1)
    jump = classify_regime(
        _prices(np.r_[0.001 * rng.normal(size=1_500), 0.05 * rng.normal(size=3)])
    )
    assert jump.volatility == "high_vol" and not jump.stable
    with pytest.raises(ValueError, match="at least"):
        classify_regime(np.ones(50), RegimeParams())


# ---------------------------------------------------------------------------------------------
# Services


def _stamp(bars, index: int) -> datetime:
    return datetime.fromtimestamp(int(bars.timestamp[index].astype("int64")), tz=UTC)


def production_model(symbol: str, regimes, *, train=(300, 2_900), feature_spec=None, seed=2):
    """4,000 bars stored, and a production xgboost version trained on bars[train]."""
    bars, _ = generate_bars(4_000, seed=seed, regimes=regimes)
    bars_import(frame=bars_frame(bars), symbol=symbol, timeframe="1h")
    model = services.registered_model_get_or_create(
        model_type="xgboost", symbol=symbol, timeframe="1h"
    )
    version = services.model_version_register(
        model=model,
        params={},
        feature_spec=validate_feature_spec(None) if feature_spec is None else feature_spec,
        training_metrics={},
        manifest={},
        train_start=_stamp(bars, train[0]),
        train_end=_stamp(bars, train[1]),
    )
    services.model_version_set_status(
        model_id=model.model_id, version=1, status=ModelStatus.CANDIDATE, actor="test"
    )
    services.model_version_promote(model_id=model.model_id, version=1, actor="test")
    version.refresh_from_db()
    return version


@pytest.mark.django_db
def test_drift_monitor_raises_drift_detected_when_the_market_changed():
    version = production_model("DRIFT", [("quiet", 3_000), ("volatile", 1_000)])
    report = monitors.drift_monitor_run(version=version)
    assert report.status == "ok" and report.drifted
    assert report.drift_score == pytest.approx(8 / 13)
    assert {"ret_1", "ma_dist_10", "ma_dist_50"} <= set(report.drifted_features)
    # The volatility features move the most (PSI far above 0.2), but the synthetic market's
    # volatility clusters for days, so their autocorrelation time (over 100 bars) leaves the KS
    # test too few effective rows to call it: the returns and moving averages carry the verdict.
    vol_48 = report.features["vol_48"]
    assert set(vol_48) == {"psi", "ks", "ks_pvalue", "autocorrelation_time", "drifted"}
    assert vol_48["psi"] > 1 and vol_48["autocorrelation_time"] > 100 and not vol_48["drifted"]
    assert report.n_current == 500 and report.current_start > version.train_end
    assert report.reference_end == version.train_end
    trigger = report.trigger
    assert (trigger.source, trigger.outcome) == ("monitor", "created")
    assert trigger.job.trigger_reason == "drift_detected"
    assert trigger.job.trigger_context["drift_report_id"] == report.pk


@pytest.mark.django_db
def test_drift_monitor_stays_quiet_on_a_stable_market(reader_client):
    version = production_model("CALM", [("quiet", 4_000)])
    report = monitors.drift_monitor_run(version=version)
    assert report.status == "ok" and not report.drifted and report.drift_score < 0.3
    assert report.trigger is None and not TrainingJob.objects.exists()
    body = reader_client.get("/clm/monitors/drift?model_id=xgboost-calm-1h").json()
    assert body["count"] == 1 and body["results"][0]["drifted"] is False
    assert body["results"][0]["version"] == 1


@pytest.mark.django_db
def test_drift_monitor_records_too_little_data_and_errors_without_raising():
    fresh = production_model("FRESH", [("quiet", 4_000)], train=(300, 3_990))
    report = monitors.drift_monitor_run(version=fresh)
    assert report.status == "insufficient_data" and "9 bars after" in report.detail
    broken = production_model("BROKEN", [("quiet", 4_000)], feature_spec={"lags": [1]}, seed=3)
    report = monitors.drift_monitor_run(version=broken)
    assert report.status == "error" and "unknown feature spec keys" in report.detail
    assert monitors.drift_monitor_run_all() == {"insufficient_data": 1, "error": 1, "drifted": 0}


@pytest.mark.slow
@pytest.mark.django_db
def test_performance_monitor_backtests_production_since_training(btc_bars, reader_client):
    PromotionPolicy.objects.create(  # gates any version passes: this test needs a production one
        model_type="xgboost", min_sharpe=-100.0, min_win_rate=0.0, min_profit_factor=0.0,
        max_drawdown=1.0, min_trades=0,
    )  # fmt: skip
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type="xgboost", symbol="BTCUSDT", timeframe="1h",
            params={"n_estimators": 60, "max_depth": 3},
        ),
        dispatch=False,
    )  # fmt: skip
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    version = TrainingJob.objects.get(pk=job.pk).version
    assert version.status == ModelStatus.PRODUCTION
    RetrainPolicy.objects.filter(model_type="xgboost").update(
        sharpe_threshold=100.0, cooldown_hours=0.0
    )

    report = monitors.performance_monitor_run(version=version)
    assert report.status == "ok" and report.degraded, report.detail
    # The same figures, recomputed by hand from the stored bars and artifact.
    bars = load_bars("BTCUSDT", "1h")
    live = np.flatnonzero(bars.timestamp > np.datetime64(int(version.train_end.timestamp()), "s"))
    trainer = trainer_class("xgboost").loads(
        artifact_load(path=version.artifact_path, sha256=version.artifact_sha256)
    )
    window = slice(int(live[0]), len(bars))
    positions = trainer.positions(build_dataset(bars, version.feature_spec), window)
    full = backtest(bars.close[window], positions, fee=0.0005, periods_per_year=8760)
    assert report.n_bars == len(live) and report.sharpe == pytest.approx(full.sharpe)
    assert report.rolling_sharpe == pytest.approx(
        rolling_sharpe(full.returns, window=720, periods_per_year=PERIODS_PER_YEAR["1h"])
    )
    assert report.trigger.outcome == "created"
    assert report.trigger.job.trigger_reason == "performance_degraded"

    RetrainPolicy.objects.filter(model_type="xgboost").update(sharpe_threshold=-100.0)
    calm = monitors.performance_monitor_run(version=version)
    assert not calm.degraded and calm.trigger is None
    body = reader_client.get("/clm/monitors/performance?flagged=true").json()
    assert [r["id"] for r in body["results"]] == [report.pk]
    assert body["results"][0]["trigger_outcome"] == "created"


@pytest.mark.django_db
def test_regime_monitor_raises_regime_change_for_the_series_models(reader_client):
    bars, _ = generate_bars(2_300, seed=2, regimes=[("quiet", 2_000), ("volatile", 300)])
    for model_type, timeframe in (("xgboost", "1h"), ("lightgbm", "1h"), ("xgboost", "4h")):
        services.registered_model_get_or_create(
            model_type=model_type, symbol="REG", timeframe=timeframe
        )
    bars_import(frame=bars_frame(bars.slice(slice(0, 2_000))), symbol="REG", timeframe="1h")
    baseline = monitors.regime_monitor_run(symbol="REG", timeframe="1h")
    assert (baseline.regime, baseline.changed, baseline.previous_regime) == (
        "range:low_vol", False, "",
    )  # fmt: skip
    assert monitors.regime_monitor_run(symbol="REG", timeframe="1h").changed is False

    bars_import(frame=bars_frame(bars), symbol="REG", timeframe="1h")
    changed = monitors.regime_monitor_run(symbol="REG", timeframe="1h")
    assert (changed.regime, changed.previous_regime, changed.changed) == (
        "range:high_vol", "range:low_vol", True,
    )  # fmt: skip
    assert (changed.trend, changed.volatility) == ("range", "high_vol")
    records = TriggerRecord.objects.filter(trigger_reason="regime_change").order_by("model_key")
    assert [(r.model_key, r.outcome) for r in records] == [
        ("lightgbm-reg-1h", "created"),
        ("xgboost-reg-1h", "created"),
    ]
    assert records[0].job.trigger_context["previous_regime"] == "range:low_vol"
    # The 4h series has no bars: its reading says so and raises nothing.
    assert monitors.regime_monitor_run_all() == {"ok": 1, "changed": 0, "insufficient_data": 1}
    body = reader_client.get("/clm/monitors/regime?symbol=reg&changed=true").json()
    assert [r["regime"] for r in body["results"]] == ["range:high_vol"]
