"""Regime-sliced evaluation: causal labels, figures per regime, the regime gate, and what the
pipeline stores and shows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from registry.models import EvaluationResult, JobStatus
from registry.services import JobRequest, training_job_create
from training.data.synthetic import generate_bars
from training.evaluation.backtest import backtest
from training.evaluation.regime_slices import evaluate_by_regime, regime_slices, worst_regime_loss
from training.pipeline import run_job
from training.promotion.gates import GateThresholds, apply_gates
from training.promotion.models import PromotionPolicy
from training.retraining.monitors.regime import (
    REGIMES,
    UNCLASSIFIED,
    classify_regime,
    regime_labels,
)

UP, CALM = "uptrend:normal_vol", "range:low_vol"


def test_each_bar_is_labelled_from_the_bars_up_to_it():
    bars, _ = generate_bars(2_000, seed=4)
    labels = regime_labels(bars.close)
    for b in range(300, 2_000, 97):
        assert labels[b] == classify_regime(bars.close[: b + 1]).regime
        changed_future = np.concatenate([bars.close[: b + 1], bars.close[b + 1 :] * 1.5])
        assert regime_labels(changed_future)[b] == labels[b]
    assert set(labels[:100]) == {UNCLASSIFIED} and set(labels[400:]) <= set(REGIMES)


@pytest.mark.parametrize("rounded", [False, True])  # rounded prices give tied volatilities
def test_the_labels_of_later_bars_alone_are_those_of_the_whole_series(rounded):
    bars, _ = generate_bars(3_000, seed=6)
    close = np.round(bars.close) + 1 if rounded else bars.close
    labels = regime_labels(close)
    for since in (0, 1, 100, 146, 147, 1_000, 1_148, 2_500, 2_999, 3_000):
        np.testing.assert_array_equal(regime_labels(close, since=since), labels[since:])


def test_slices_match_a_hand_computation():
    close = np.array([100.0, 110.0, 99.0, 99.0, 105.0, 105.0])
    positions = np.array([1.0, 1.0, 0.0, -1.0, -1.0, 0.0])
    labels = np.array([UP, UP, CALM, CALM, UP, CALM], dtype=object)
    slices = regime_slices(
        close=close, positions=positions, regimes=labels, fee=0.01, periods_per_year=4
    )
    assert list(slices) == list(REGIMES)  # every regime, in the classifier's order
    # Decision bars 0..4: returns w[t] * a[t+1] - fee * |w[t] - w[t-1]|.
    d = [0.1 - 0.01, -0.1, 0.0 - 0.01, -(105 / 99 - 1) - 0.01, 0.0]
    up = slices[UP]  # bars 0, 1 and 4
    assert up["bars"] == 3 and up["share"] == pytest.approx(3 / 5) and up["trades"] == 1
    assert up["total_return"] == pytest.approx((1 + d[0]) * (1 + d[1]) * (1 + d[4]) - 1)
    assert up["max_drawdown"] == pytest.approx(0.1)
    up_returns = np.array([d[0], d[1], d[4]])
    assert up["sharpe"] == pytest.approx(up_returns.mean() / up_returns.std(ddof=1) * 2)
    calm = slices[CALM]  # bars 2 and 3; bar 5, the last, decides nothing held in the window
    assert calm["bars"] == 2 and calm["trades"] == 1
    assert calm["total_return"] == pytest.approx((1 + d[2]) * (1 + d[3]) - 1)
    assert slices["downtrend:high_vol"] == {"bars": 0, "absent": True}
    assert worst_regime_loss(slices, min_bars=2) == (CALM, calm["total_return"])
    assert worst_regime_loss(slices, min_bars=3) == (UP, up["total_return"])
    assert worst_regime_loss(slices, min_bars=4) is None


def test_slices_add_up_to_the_backtest_of_the_window():
    bars, _ = generate_bars(3_000, seed=9)
    window = slice(2_000, 3_000)
    rng = np.random.default_rng(1)
    positions = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=100), 10)
    positions[-1] = 0.0  # no trade opened on the last bar, which the slices do not count
    result = evaluate_by_regime(
        close=bars.close, window=window, positions=positions, fee=0.0, periods_per_year=8_760
    )
    whole = backtest(bars.close[window], positions, fee=0.0, periods_per_year=8_760)
    present = [f for f in result.slices.values() if not f["absent"]]
    assert sum(f["bars"] for f in present) == 999
    assert sum(f["trades"] for f in present) == whole.trades
    # Without fees every bar's return is the backtest's, so the slices compound to its total.
    assert math.prod(1 + f["total_return"] for f in present) == pytest.approx(
        1 + whole.total_return, rel=1e-9
    )
    assert len(result.labels) == 1_000 and UNCLASSIFIED not in result.slices
    with pytest.raises(ValueError, match="differ in length"):
        regime_slices(close=bars.close[:10], positions=np.zeros(9), regimes=[UP] * 10, fee=0.0,
                      periods_per_year=1)  # fmt: skip


def _metrics() -> dict:
    return {
        "sharpe": 2.0, "win_rate": 0.6, "profit_factor": 1.5, "max_drawdown": 0.05,
        "trades": 80, "dsr": 0.99,
    }  # fmt: skip


def test_the_regime_gate_is_off_by_default_and_judges_regimes_with_enough_bars():
    slices = {
        UP: {"bars": 400, "absent": False, "total_return": 0.08},
        CALM: {"bars": 300, "absent": False, "total_return": -0.06},
        "range:high_vol": {"bars": 20, "absent": False, "total_return": -0.30},
        "downtrend:low_vol": {"bars": 0, "absent": True},
    }
    gates, passed = apply_gates(_metrics(), GateThresholds(), regime_slices=slices)
    assert passed and "regime_loss" not in gates
    strict = GateThresholds(regime_min_bars=200, regime_max_loss=0.05)
    gates, passed = apply_gates(_metrics(), strict, regime_slices=slices)
    assert not passed
    assert gates["regime_loss"] == {
        "value": -0.06, "threshold": -0.05, "op": ">=", "min_bars": 200, "regime": CALM,
        "passed": False,
    }  # fmt: skip
    lenient = GateThresholds(regime_min_bars=200, regime_max_loss=0.1)
    assert apply_gates(_metrics(), lenient, regime_slices=slices)[1]
    thin = GateThresholds(regime_min_bars=500, regime_max_loss=0.0)
    gates, passed = apply_gates(_metrics(), thin, regime_slices=slices)
    assert passed and gates["regime_loss"]["value"] is None
    with pytest.raises(ValueError, match="no regime slices"):
        apply_gates(_metrics(), strict)


@pytest.mark.django_db
def test_the_pipeline_stores_shows_and_gates_on_regime_slices(btc_bars, reader_client):
    def train() -> EvaluationResult:
        job, _ = training_job_create(
            request=JobRequest(
                model_type="xgboost", symbol=btc_bars, timeframe="1h",
                params={"n_estimators": 60, "max_depth": 3},
            ),
            dispatch=False,
        )  # fmt: skip
        assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
        job.refresh_from_db()
        return EvaluationResult.objects.get(version=job.version)

    evaluation = train()
    slices = evaluation.regime_slices
    assert set(REGIMES) <= set(slices) <= {*REGIMES, UNCLASSIFIED}  # jsonb keeps no key order
    assert sum(f["bars"] for f in slices.values()) == evaluation.n_bars - 1
    assert "regime_loss" not in evaluation.gates
    assert evaluation.n_trials == 1 and "dsr" not in evaluation.gates  # nothing selected yet
    body = reader_client.get(f"/clm/evaluations?model_id={evaluation.version.model.model_id}")
    assert body.status_code == 200
    assert body.json()["results"][0]["regime_slices"] == slices

    # A gate no regime with a bar can pass: every regime present in the window is judged.
    PromotionPolicy.objects.create(model_type="xgboost", regime_min_bars=1, regime_max_loss=0.0)
    strict = train()
    gate = strict.gates["regime_loss"]
    present = {n: f for n, f in strict.regime_slices.items() if not f["absent"]}
    worst = min(present, key=lambda n: present[n]["total_return"])
    assert (gate["regime"], gate["value"]) == (worst, present[worst]["total_return"])
    assert gate["passed"] == (present[worst]["total_return"] >= 0.0)
    assert strict.n_trials == 2 and strict.gates["dsr"]["threshold"] == 0.95
    assert strict.passed == all(g["passed"] for g in strict.gates.values())
