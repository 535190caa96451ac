"""Automatic rollback: production's live results against its limits, the rollback to the previous
valid version (never a failed or unverifiable one), once per cooldown, with audit, event, reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import REGISTRY

from registry.artifacts import artifact_storage
from registry.models import LifecycleEvent, ModelStatus, ModelVersion, OutboxEvent
from training.promotion.models import RealisedReturn, RollbackDecision, RollbackPolicy
from training.promotion.rollback import check_limits, rollback_check
from training.promotion.tasks import rollback_step

from .lifecycle import (
    MODEL_ID,
    arrive,
    market,
    rule_trainers,  # noqa: F401 (fixture)
    rule_version,
    stamp,
    status_of,
)

pytestmark = pytest.mark.usefixtures("rule_trainers")


@pytest.fixture
def bars(db):
    bars = market(1_200)
    arrive(bars, 1_200)
    return bars


@pytest.fixture
def policy(db) -> RollbackPolicy:
    return RollbackPolicy.objects.create(
        model_type="other", max_drawdown=0.10, min_rolling_sharpe=-1.0, window_bars=100,
        cooldown_hours=24.0,
    )  # fmt: skip


def history(*steps: dict) -> list[ModelVersion]:
    """Versions promoted one after the other (each retires the one before)."""
    return [rule_version(status=ModelStatus.PRODUCTION, **step) for step in steps]


def live(version: ModelVersion, bars, returns) -> None:
    """Realised per-bar returns of `version` on the last bars, as a trading service reports them."""
    start = 1_200 - len(returns)
    RealisedReturn.objects.bulk_create(
        RealisedReturn(
            version=version, source="reported", timestamp=stamp(bars, start + i), value=r
        )
        for i, r in enumerate(returns)
    )


CRASH = np.r_[np.full(50, 0.001), np.full(50, -0.004)]  # 18 % down in the last 50 bars
FINE = np.random.default_rng(0).normal(0.0005, 0.003, 100)


# ---------------------------------------------------------------------------------------------
# Limits, pure


def test_limits_by_hand():
    returns = np.array([0.1, -0.2, 0.05, -0.1])
    check = check_limits(returns, max_drawdown=0.15, min_rolling_sharpe=0.0, periods_per_year=1)
    equity = np.cumprod(1 + returns)  # 1.1, 0.88, 0.924, 0.8316: peak 1.1
    assert check.drawdown == pytest.approx(1 - equity[-1] / 1.1)
    assert check.rolling_sharpe == pytest.approx(returns.mean() / returns.std(ddof=1))
    assert [b["limit"] for b in check.breaches] == ["max_drawdown", "min_rolling_sharpe"]
    calm = check_limits(FINE, max_drawdown=0.15, min_rolling_sharpe=-1.0, periods_per_year=8760)
    assert calm.breaches == [] and calm.rolling_sharpe > 0
    # A loss from the first bar on counts against the starting capital.
    assert check_limits(
        np.array([-0.3, 0.0]), max_drawdown=0.5, min_rolling_sharpe=-math.inf, periods_per_year=1
    ).drawdown == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------
# Rollbacks


def test_a_breach_rolls_back_to_the_previous_production_version(policy, bars, operator_client):
    older, previous, current = history({"seed": 1}, {"seed": 2}, {"seed": 3})
    live(current, bars, CRASH)
    decision = rollback_check(model_id=MODEL_ID)
    assert (decision.outcome, decision.from_version, decision.to_version) == (
        "rolled_back", current, previous,
    )  # fmt: skip
    assert decision.source == "reported" and decision.n_bars == 100
    assert decision.drawdown == pytest.approx(1 - (1 - 0.004) ** 50, rel=1e-6)
    assert [b["limit"] for b in decision.breaches] == ["max_drawdown", "min_rolling_sharpe"]
    assert status_of(previous) == ModelStatus.PRODUCTION
    assert status_of(current) == ModelStatus.RETIRED
    assert status_of(older) == ModelStatus.RETIRED
    audit = LifecycleEvent.objects.filter(version=previous, action="rollback").get()
    assert audit.actor == "auto-rollback" and audit.from_status == "retired"
    assert "drawdown 18.2% beyond the 10.0% limit" in audit.reason
    event = OutboxEvent.objects.get(event_type="model_rollback")
    assert event.payload["version"] == previous.version
    assert event.payload["from_version"] == current.version
    assert "automatic rollback" in event.payload["reason"]

    listed = operator_client.get(f"/clm/rollbacks?model_id={MODEL_ID}&outcome=rolled_back").json()
    [row] = listed["results"]
    assert (row["from_version"], row["to_version"], row["outcome"]) == (3, 2, "rolled_back")
    assert row["breaches"][0]["threshold"] == 0.10
    assert operator_client.get("/clm/rollbacks?outcome=cooldown").json()["count"] == 0
    assert operator_client.get("/clm/rollbacks?outcome=nonsense").status_code == 400


def test_once_per_cooldown(policy, bars):
    _, previous, current = history({"seed": 1}, {"seed": 2}, {"seed": 3})
    live(current, bars, CRASH)
    assert rollback_check(model_id=MODEL_ID).outcome == "rolled_back"
    live(previous, bars, CRASH)  # the restored version breaches too, within the cooldown
    held = rollback_check(model_id=MODEL_ID)
    assert held.outcome == "cooldown" and held.to_version is None
    assert "within the 24 h cooldown" in held.reason
    assert status_of(previous) == ModelStatus.PRODUCTION
    assert rollback_check(model_id=MODEL_ID) is None  # said once
    assert RollbackDecision.objects.count() == 2
    assert OutboxEvent.objects.filter(event_type="model_rollback").count() == 1

    # After the cooldown it rolls back again, but never to the version it rolled back from.
    RollbackDecision.objects.update(created_at=held.created_at - np.timedelta64(25, "h").item())
    again = rollback_check(model_id=MODEL_ID)
    assert again.outcome == "rolled_back" and again.to_version.version == 1
    assert again.skipped == [
        {"version": 3, "why": "it was rolled back automatically for breaching its limits"}
    ]


def test_never_to_a_failed_version(policy, bars):
    older, previous, current = history({"seed": 1}, {"seed": 2}, {"seed": 3})
    rule_version(seed=4, status=ModelStatus.FAILED)  # never production: not a candidate at all
    # A version that was in production and has since been failed (by hand, in the database).
    ModelVersion.objects.filter(pk=previous.pk).update(status=ModelStatus.FAILED)
    live(current, bars, CRASH)
    decision = rollback_check(model_id=MODEL_ID)
    assert decision.outcome == "rolled_back" and decision.to_version == older
    assert decision.skipped == [{"version": 2, "why": "it is failed"}]
    assert status_of(previous) == ModelStatus.FAILED


def test_never_to_an_unverifiable_artifact(policy, bars):
    only, current = history({"seed": 1}, {"seed": 2})
    with artifact_storage().open(only.artifact_path, "wb") as handle:
        handle.write(b"tampered")
    live(current, bars, CRASH)
    decision = rollback_check(model_id=MODEL_ID)
    assert decision.outcome == "no_valid_target" and decision.to_version is None
    assert "artifact unverifiable" in decision.skipped[0]["why"]
    assert "production stays" in decision.reason
    assert status_of(current) == ModelStatus.PRODUCTION
    assert not OutboxEvent.objects.filter(event_type="model_rollback").exists()
    assert rollback_check(model_id=MODEL_ID) is None  # said once per cooldown

    artifact_storage().delete(only.artifact_path)  # missing altogether: the same answer
    RollbackDecision.objects.all().delete()
    assert "missing" in rollback_check(model_id=MODEL_ID).skipped[0]["why"]


def test_a_low_sharpe_alone_is_a_breach(policy, bars):
    _, current = history({"seed": 1}, {"seed": 2})
    slow_bleed = np.random.default_rng(1).normal(-0.0003, 0.001, 100)  # small drawdown, bad Sharpe
    live(current, bars, slow_bleed)
    decision = rollback_check(model_id=MODEL_ID)
    assert [b["limit"] for b in decision.breaches] == ["min_rolling_sharpe"]
    assert decision.drawdown < 0.10 and decision.outcome == "rolled_back"


def test_no_breach_no_decision_and_the_policy_can_be_off(policy, bars):
    _, current = history({"seed": 1}, {"seed": 2})
    live(current, bars, FINE)
    assert rollback_check(model_id=MODEL_ID) is None
    RealisedReturn.objects.all().delete()
    live(current, bars, CRASH)
    RollbackPolicy.objects.update(enabled=False)
    assert rollback_check(model_id=MODEL_ID) is None
    assert not RollbackDecision.objects.exists()


def test_without_reports_it_reads_paper_returns_since_training(policy, bars):
    """A model that trades against the next move loses on the bars since its training ended."""
    rule_version(skill=0.3, seed=1, status=ModelStatus.PRODUCTION, train_end=stamp(bars, 900))
    rule_version(skill=-0.4, seed=2, status=ModelStatus.PRODUCTION, train_end=stamp(bars, 900))
    counted = {"lifecycle_pass": "rollback", "outcome": "rolled_back"}
    before = REGISTRY.get_sample_value("clm_lifecycle_outcomes_total", counted) or 0
    assert rollback_step(MODEL_ID) == "rolled_back"  # the pass's Celery task, in-process
    assert REGISTRY.get_sample_value("clm_lifecycle_outcomes_total", counted) == before + 1
    decision = RollbackDecision.objects.get()
    assert decision.source == "computed" and decision.n_bars == 100
    assert decision.window_end == stamp(bars, 1_199) and decision.window_start == stamp(bars, 1_100)
    assert decision.to_version.version == 1
    # The restored model earns on the same bars: the next check finds nothing wrong.
    assert rollback_step(MODEL_ID) == "ok"


def test_admin_lists_decisions_and_policies(policy, bars, admin_client):
    _, current = history({"seed": 1}, {"seed": 2})
    live(current, bars, CRASH)
    decision = rollback_check(model_id=MODEL_ID)
    for name in ("rollbackdecision", "rollbackpolicy"):
        assert admin_client.get(f"/admin/promotion/{name}/").status_code == 200, name
    page = admin_client.get(f"/admin/promotion/rollbackdecision/{decision.pk}/change/")
    assert page.status_code == 200 and b"automatic rollback" in page.content
