"""The DSR gate: on by default (0.95) wherever more than one trial exists, editable per type."""

from __future__ import annotations

import pytest

from training.promotion.gates import DEFAULT_MIN_DSR, GateThresholds, apply_gates
from training.promotion.models import PromotionPolicy
from training.promotion.policies import evaluation_policy_for


def _metrics(**changes) -> dict:
    metrics = {
        "sharpe": 2.0, "win_rate": 0.6, "profit_factor": 1.5, "max_drawdown": 0.05,
        "trades": 80, "dsr": 0.9, "n_trials": 5,
    }  # fmt: skip
    return {**metrics, **changes}


def test_the_dsr_gate_judges_selections_from_more_than_one_trial():
    assert GateThresholds().min_dsr == DEFAULT_MIN_DSR == 0.95
    gates, passed = apply_gates(_metrics(), GateThresholds())
    assert not passed and gates["dsr"] == {
        "value": 0.9, "threshold": 0.95, "op": ">=", "passed": False
    }  # fmt: skip
    assert apply_gates(_metrics(dsr=0.96), GateThresholds())[1]
    # One trial: nothing was selected, DSR is PSR, and the gate does not apply.
    gates, passed = apply_gates(_metrics(n_trials=1), GateThresholds())
    assert passed and "dsr" not in gates
    gates, passed = apply_gates(_metrics(), GateThresholds(min_dsr=None))
    assert passed and "dsr" not in gates


@pytest.mark.django_db
def test_the_dsr_default_holds_without_a_policy_and_is_editable_per_model_type():
    assert evaluation_policy_for("xgboost", auto_promote_default=True).gates.min_dsr == 0.95
    PromotionPolicy.objects.create(model_type="xgboost")
    PromotionPolicy.objects.create(model_type="lightgbm", min_dsr=None)
    PromotionPolicy.objects.create(model_type="nhits", min_dsr=0.5)
    gates = {
        t: evaluation_policy_for(t, auto_promote_default=True).gates.min_dsr
        for t in ("xgboost", "lightgbm", "nhits")
    }
    assert gates == {"xgboost": 0.95, "lightgbm": None, "nhits": 0.5}
