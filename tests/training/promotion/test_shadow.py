"""Shadow testing: paper trading beside production on new bars, the sequential decision, the
pipeline's shadow entry, the API and the admin."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection

from registry import services
from registry.models import LifecycleEvent, ModelStatus, ModelVersion, OutboxEvent
from training.data.bars import load_bars
from training.data.features import build_dataset
from training.evaluation.backtest import backtest
from training.evaluation.stats import sequential_design
from training.pipeline import run_job
from training.promotion.models import (
    PromotionPolicy,
    ShadowComparison,
    ShadowObservation,
    ShadowPolicy,
)
from training.promotion.shadow import (
    decide,
    paper_trade,
    shadow_evaluate,
    shadow_evaluate_all,
    shadow_series,
    shadow_start,
    shadow_stop,
)

from .lifecycle import (
    MODEL_ID,
    SYMBOL,
    RuleTrainer,
    arrive,
    market,
    rule_trainers,  # noqa: F401 (fixture)
    rule_version,
    status_of,
)

pytestmark = pytest.mark.usefixtures("rule_trainers")


@pytest.fixture
def policy(db) -> ShadowPolicy:
    return ShadowPolicy.objects.create(
        model_type="other", mode="all", min_bars=200, max_bars=600, looks=3, min_trades=10
    )


@pytest.fixture
def bars(db):
    """1,800 bars of which the first 1,000 are stored: the rest arrive during the tests."""
    bars = market(1_800)
    arrive(bars, 1_000)
    return bars


def start(version, **kwargs) -> ShadowComparison:
    return shadow_start(model_id=MODEL_ID, version=version.version, actor="test", **kwargs)


# ---------------------------------------------------------------------------------------------
# Decisions


def test_a_better_shadow_is_promoted_with_its_statistics_in_audit_and_event(policy, bars):
    production = rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.5, seed=2)
    comparison = start(challenger)
    assert status_of(challenger) == ModelStatus.SHADOW
    assert comparison.start_after == arrive(bars, 1_000)
    assert shadow_evaluate(comparison_id=comparison.pk) is None  # no new bar yet

    arrive(bars, 1_250)
    observation = shadow_evaluate(comparison_id=comparison.pk)
    assert (observation.decision, observation.look, observation.tested_bars) == ("promote", 1, 200)
    assert observation.statistic >= observation.boundary and observation.p_value < 0.01
    assert observation.ci_low > 0
    assert status_of(challenger) == ModelStatus.PRODUCTION
    assert status_of(production) == ModelStatus.RETIRED
    comparison.refresh_from_db()
    assert (comparison.status, comparison.decision) == ("completed", "promote")
    promoted = LifecycleEvent.objects.filter(version=challenger, action="promote").get()
    assert promoted.actor == "shadow" and "DM statistic" in promoted.reason
    assert "p = " in promoted.reason and f"comparison {comparison.pk}" in promoted.reason
    event = OutboxEvent.objects.filter(event_type="model_promoted").order_by("-created_at")[0]
    assert (
        event.payload["version"] == challenger.version and "DM statistic" in event.payload["reason"]
    )

    # Both per-bar return series are stored: the 250 new bars, recomputed here by hand.
    series = shadow_series(comparison)
    assert len(series.shadow) == len(series.production) == 250
    trades = paper_trade([challenger, production], after=comparison.start_after, fee=0.0005)
    np.testing.assert_allclose(series.shadow, trades.returns[challenger.pk])
    stored = load_bars("LIFE", "1h")
    window = slice(1_000, 1_250)
    w = RuleTrainer({"skill": 0.0, "seed": 1}).positions(build_dataset(stored, None), window)
    by_hand = backtest(stored.close[window], w, fee=0.0005).returns
    np.testing.assert_allclose(series.production, by_hand)
    assert (series.timestamps[0], series.timestamps[-1]) == (
        stored.timestamp[1_000], stored.timestamp[1_249],
    )  # fmt: skip


def test_a_shadow_annualises_with_its_symbols_calendar(policy, bars):
    from training.models import Symbol

    Symbol.objects.create(symbol=SYMBOL, calendar="fx")  # 24/5: 6,240 hourly bars a year
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    comparison = start(rule_version(skill=0.5, seed=2))
    assert comparison.periods_per_year == 6_240
    arrive(bars, 1_250)
    shadow_evaluate(comparison_id=comparison.pk)
    comparison.refresh_from_db()
    assert comparison.periods_per_year == 6_240


def test_an_equally_good_shadow_keeps_shadowing_then_is_retired_at_the_maximum(policy, bars):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.0, seed=3)
    comparison = start(challenger)

    arrive(bars, 1_150)  # before the first look: recorded, for information only
    early = shadow_evaluate(comparison_id=comparison.pk)
    assert (early.decision, early.look, early.n_new, early.n_bars) == ("continue", None, 150, 150)
    assert early.statistic is not None and early.p_value is not None and early.ci_low is not None
    assert "next decision at 200 bars" in early.reason

    arrive(bars, 1_450)  # looks 1 (200 bars) and 2 (400 bars) are due together
    middle = shadow_evaluate(comparison_id=comparison.pk)
    assert (middle.decision, middle.look, middle.tested_bars) == ("continue", 2, 400)
    assert "look 2/3 at 400 bars: not proved better yet" in middle.reason
    assert "next decision at 600 bars" in middle.reason

    arrive(bars, 1_800)
    last = shadow_evaluate(comparison_id=comparison.pk)
    assert (last.decision, last.look, last.tested_bars) == ("retire", 3, 600)
    assert status_of(challenger) == ModelStatus.RETIRED
    retired = LifecycleEvent.objects.filter(version=challenger, action="retire").get()
    assert "maximum duration" in retired.reason and "DM statistic" in retired.reason
    comparison.refresh_from_db()
    assert (comparison.status, comparison.decision, comparison.looks_done) == (
        "completed", "retire", 3,
    )  # fmt: skip
    assert list(comparison.observations.values_list("n_bars", flat=True)) == [150, 450, 800]


def test_with_auto_promotion_off_a_winner_goes_back_to_candidate_marked_ready(policy, bars):
    PromotionPolicy.objects.create(model_type="other", auto_promote=False)
    production = rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.5, seed=2)
    comparison = start(challenger)
    arrive(bars, 1_250)
    observation = shadow_evaluate(comparison_id=comparison.pk)
    assert observation.decision == "ready" and "auto-promotion is off" in observation.reason
    assert status_of(challenger) == ModelStatus.CANDIDATE
    assert status_of(production) == ModelStatus.PRODUCTION
    assert not OutboxEvent.objects.filter(event_type="model_promoted", payload__version=2).exists()
    # A person promotes it later, through the usual service.
    services.model_version_promote(model_id=MODEL_ID, version=challenger.version, actor="op")


def test_a_shadow_that_hardly_trades_is_not_judged_and_retires(policy, bars):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    idle = rule_version(flat=True)
    comparison = start(idle)
    arrive(bars, 1_800)
    observation = shadow_evaluate(comparison_id=comparison.pk)
    assert (observation.decision, observation.look, observation.shadow_trades) == ("retire", 3, 0)
    assert "only 0 trades, fewer than the 10 required" in observation.reason
    assert status_of(idle) == ModelStatus.RETIRED


def test_decide_takes_each_look_on_exactly_its_bars():
    design = sequential_design(min_bars=100, max_bars=300, looks=3, alpha=0.05, spending="pocock")
    rng = np.random.default_rng(0)
    production = rng.normal(0, 0.01, 250)
    shadow = production + rng.normal(0, 0.01, 250)
    shadow[150:] += 0.01  # an edge from bar 150 on: it shows at the second look, not the first
    w = np.sign(rng.normal(size=250))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 250)))
    outcome = decide(
        shadow=shadow, production=production, close=close, shadow_positions=w,
        production_positions=w, design=design, looks_done=0, min_trades=1,
    )  # fmt: skip
    assert (outcome.decision, outcome.look, outcome.looks_done, outcome.tested_bars) == (
        "promote", 2, 2, 200,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Changes around a comparison


def test_a_production_change_supersedes_the_comparison_and_the_next_run_restarts_it(policy, bars):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.0, seed=3)
    comparison = start(challenger)
    newer = rule_version(skill=0.0, seed=4, status=ModelStatus.PRODUCTION)
    arrive(bars, 1_100)
    assert shadow_evaluate(comparison_id=comparison.pk) is None
    comparison.refresh_from_db()
    assert (comparison.status, comparison.decision) == ("completed", "superseded")
    assert status_of(challenger) == ModelStatus.SHADOW

    counts = shadow_evaluate_all()
    assert counts["started"] == 1
    fresh = ShadowComparison.objects.get(shadow=challenger, status="active")
    assert fresh.production_id == newer.pk and fresh.start_after == arrive(bars, 1_100)


def test_two_steps_at_once_record_the_new_bars_once(policy, bars, transactional_db):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    comparison = start(rule_version(skill=0.0, seed=3))
    arrive(bars, 1_100)
    barrier = threading.Barrier(2)
    results = []

    def step() -> None:
        try:
            barrier.wait()
            results.append(shadow_evaluate(comparison_id=comparison.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=step) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r is None for r in results) == [False, True]
    assert ShadowObservation.objects.filter(comparison=comparison).count() == 1


def test_a_broken_artifact_is_recorded_on_the_comparison_and_others_go_on(policy, bars):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    comparison = start(rule_version(skill=0.0, seed=3))
    # The shadow version's artifact no longer matches its recorded sha256.
    ModelVersion.objects.filter(pk=comparison.shadow_id).update(artifact_sha256="0" * 64)
    arrive(bars, 1_100)
    assert shadow_evaluate_all() == {"failed": 1}
    comparison.refresh_from_db()
    assert "ArtifactError" in comparison.last_error and comparison.status == "active"


def test_start_refuses_what_it_cannot_shadow(policy, bars):
    with pytest.raises(Exception, match="unknown model"):
        shadow_start(model_id="other-none-1h", version=1, actor="t")
    candidate = rule_version(skill=0.0, seed=3)
    with pytest.raises(Exception, match="no production version"):
        start(candidate)
    production = rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    with pytest.raises(Exception, match="only candidate or shadow"):
        start(production)
    start(candidate)
    with pytest.raises(Exception, match="already being shadowed"):
        start(candidate)
    assert ShadowComparison.objects.count() == 1


# ---------------------------------------------------------------------------------------------
# The pipeline's shadow entry


@pytest.mark.slow
def test_the_pipeline_puts_a_gate_passing_version_in_shadow_per_policy(db):
    from registry.models import TrainingJob
    from registry.services import JobRequest, training_job_create

    from .lifecycle import stamp

    PromotionPolicy.objects.create(
        model_type="xgboost", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=1, min_dsr=None,  # every gate passes, the DSR's too
    )  # fmt: skip
    ShadowPolicy.objects.create(
        model_type="xgboost", mode="unless_clearly_better", clear_margin=0.5, min_bars=100,
        max_bars=1_000, looks=2, min_trades=1,
    )  # fmt: skip
    bars = market(3_400, seed=11)
    arrive(bars, 3_000, symbol="BTCUSDT")

    def train(seed: int):
        job, _ = training_job_create(
            request=JobRequest(
                model_type="xgboost", symbol="BTCUSDT", timeframe="1h", seed=seed,
                params={"n_estimators": 40, "max_depth": 3},
            ),
            dispatch=False,
        )  # fmt: skip
        run_job(job_id=str(job.pk))
        return TrainingJob.objects.get(pk=job.pk).version

    first = train(0)
    assert first.status == ModelStatus.PRODUCTION  # nothing to shadow against
    second = train(0)  # the same model: it cannot clearly beat production
    assert second.status == ModelStatus.SHADOW
    entry = LifecycleEvent.objects.filter(version=second, action="shadow").get()
    assert entry.actor == "pipeline" and "does not clearly beat" in entry.reason
    # The pre-check is a selection: both Sharpe ratios are the validation window's, not the
    # test window's the gates and the users see.
    validation = f"{second.training_metrics['validation_sharpe']:.3f}"
    evaluated = f"{second.evaluations.get().sharpe:.3f}"
    assert validation != evaluated
    assert f"validation Sharpe {validation} does not clearly beat production's {validation}" in (
        entry.reason
    )
    comparison = ShadowComparison.objects.get(shadow=second)
    assert comparison.production_id == first.pk and comparison.status == "active"
    assert comparison.start_after == stamp(bars, 2_999)
    assert (comparison.min_bars, comparison.max_bars, comparison.fee) == (100, 1_000, 0.0005)

    arrive(bars, 3_400, symbol="BTCUSDT")
    assert shadow_evaluate_all() == {"continue": 1}
    observation = comparison.observations.get()
    assert observation.n_bars == 400 and observation.look == 1 and observation.p_value == 0.5
    assert observation.statistic == 0.0  # the same model on the same bars: no difference at all


# ---------------------------------------------------------------------------------------------
# API and admin


def test_api_starts_lists_shows_draws_and_stops_comparisons(
    policy, bars, operator_client, reader_client
):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.0, seed=3)
    body = {"model_id": MODEL_ID, "version": challenger.version, "reason": "try it"}
    assert reader_client.post("/clm/shadow", body, format="json").status_code == 403
    created = operator_client.post("/clm/shadow", body, format="json")
    assert created.status_code == 201, created.json()
    comparison = created.json()
    assert (comparison["shadow_version"], comparison["production_version"]) == (2, 1)
    assert comparison["design"]["looks"] == [200, 400, 600]
    assert len(comparison["design"]["boundaries"]) == 3 and comparison["status"] == "active"
    again = operator_client.post("/clm/shadow", body, format="json")
    assert again.status_code == 409 and "already being shadowed" in again.json()["detail"]
    unknown = operator_client.post("/clm/shadow", {**body, "version": 9}, format="json")
    assert unknown.status_code == 404
    bad = operator_client.post("/clm/shadow", {"model_id": MODEL_ID}, format="json")
    assert bad.status_code == 400 and "version" in bad.json()["errors"]

    curve = f"/clm/shadow/{comparison['id']}/curve.png"
    assert reader_client.get(curve).status_code == 404  # no bars yet
    arrive(bars, 1_150)
    shadow_evaluate(comparison_id=comparison["id"])
    picture = reader_client.get(curve)
    assert picture.status_code == 200 and picture["Content-Type"] == "image/png"
    assert picture.content.startswith(b"\x89PNG")

    detail = reader_client.get(f"/clm/shadow/{comparison['id']}").json()
    assert detail["n_bars"] == 150 and detail["statistic"] is not None
    [step] = detail["observations"]
    assert step["decision"] == "continue" and step["p_value"] is not None
    assert reader_client.get("/clm/shadow/999").status_code == 404

    listed = reader_client.get(f"/clm/shadow?model_id={MODEL_ID}&status=active&version=2").json()
    assert [row["id"] for row in listed["results"]] == [comparison["id"]]
    assert reader_client.get("/clm/shadow?status=completed").json()["count"] == 0
    assert reader_client.get("/clm/shadow?status=nonsense").status_code == 400

    stop = f"/clm/shadow/{comparison['id']}/stop"
    assert reader_client.post(stop, {}, format="json").status_code == 403
    stopped = operator_client.post(stop, {"reason": "enough"}, format="json")
    assert stopped.status_code == 200 and stopped.json()["decision"] == "stopped"
    assert "stopped by operator: enough" in stopped.json()["reason"]
    assert status_of(challenger) == ModelStatus.CANDIDATE
    assert operator_client.post(stop, {}, format="json").status_code == 409
    assert reader_client.get("/clm/shadow?decision=stopped").json()["count"] == 1


def test_stop_through_the_service_writes_the_audit_row(policy, bars):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.0, seed=3)
    comparison = start(challenger)
    shadow_stop(comparison_id=comparison.pk, actor="op", reason="manual")
    back = LifecycleEvent.objects.filter(version=challenger, action="candidate").first()
    assert back.from_status == "shadow" and "stopped by op: manual" in back.reason


def test_admin_shows_comparisons_on_the_version_page(policy, bars, admin_client):
    rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION)
    challenger = rule_version(skill=0.0, seed=3)
    comparison = start(challenger)
    arrive(bars, 1_150)
    shadow_evaluate(comparison_id=comparison.pk)
    page = admin_client.get(f"/admin/registry/modelversion/{challenger.pk}/change/")
    assert page.status_code == 200
    assert b"Shadow comparisons" in page.content and b"continue" in page.content
    for name in ("shadowcomparison", "shadowpolicy"):
        assert admin_client.get(f"/admin/promotion/{name}/").status_code == 200, name
    detail = admin_client.get(f"/admin/promotion/shadowcomparison/{comparison.pk}/change/")
    assert detail.status_code == 200 and b"curve.png" in detail.content
