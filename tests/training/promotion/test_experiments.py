"""A/B experiments: starting with validated weights, the allocation trading services read, reported
and computed per-bar returns, the verdict and the winner's promotion; bad input changes nothing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from registry import services
from registry.models import LifecycleEvent, ModelStatus, OutboxEvent
from training.promotion.experiments import (
    ArmRequest,
    experiment_design,
    experiment_evaluate,
    experiment_start,
    experiment_stop,
    experiments_evaluate_all,
)
from training.promotion.models import Experiment, ExperimentArm, RealisedReturn
from training.promotion.tasks import experiment_step

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
    bars = market(1_600)
    arrive(bars, 1_000)
    return bars


@pytest.fixture
def line(bars):
    """Production v1 and candidates v2 (better), v3 (as good as production)."""
    return (
        rule_version(skill=0.0, seed=1, status=ModelStatus.PRODUCTION),
        rule_version(skill=0.5, seed=2),
        rule_version(skill=0.0, seed=3),
    )


def body(**overrides) -> dict:
    return {
        "model_id": MODEL_ID,
        "arms": [{"version": 1, "weight": 0.8}, {"version": 2, "weight": 0.2}],
        "metric": "mean_return",
        "stopping_rule": "fixed_horizon",
        "min_bars": 100,
        "returns_source": "reported",
        **overrides,
    }


def report(client, rows: list[tuple[int, object, float]], **extra):
    results = [{"version": v, "timestamp": t.isoformat(), "return": r} for v, t, r in rows]
    return client.post(
        f"/clm/models/{MODEL_ID}/results", {"results": results, **extra}, format="json"
    )


# ---------------------------------------------------------------------------------------------
# Starting, with bad input refused whole


BAD_STARTS = [
    ({"arms": [{"version": 1, "weight": 0.8}, {"version": 2, "weight": 0.3}]}, 400, "sum to 1.1"),
    ({"arms": [{"version": 1, "weight": 1.0}, {"version": 2, "weight": 0.0}]}, 400, "(0, 1]"),
    ({"arms": [{"version": 1, "weight": 1.5}, {"version": 2, "weight": -0.5}]}, 400, "(0, 1]"),
    ({"arms": [{"version": 1, "weight": 1.0}]}, 400, "at least one candidate"),
    ({"arms": [{"version": 2, "weight": 0.5}, {"version": 2, "weight": 0.5}]}, 400, "one arm"),
    ({"arms": [{"version": 2, "weight": 0.5}, {"version": 3, "weight": 0.5}]}, 400, "v1"),
    ({"arms": [{"version": 1, "weight": 0.5}, {"version": 9, "weight": 0.5}]}, 404, "version 9"),
    ({"model_id": "other-nope-1h"}, 404, "unknown model"),
    ({"min_bars": 5}, 400, "min_bars"),
    ({"metric": "sortino"}, 400, "metric"),
    ({"alpha": 0.9}, 400, "alpha"),
    ({"stopping_rule": "group_sequential", "min_bars": 200, "max_bars": 100}, 400, "max_bars"),
]


@pytest.mark.parametrize(("change", "code", "message"), BAD_STARTS)
def test_bad_starts_are_refused_and_store_nothing(line, operator_client, change, code, message):
    response = operator_client.post("/clm/experiments", body(**change), format="json")
    assert response.status_code == code, response.json()
    assert message in str(response.json())
    assert not Experiment.objects.exists() and not ExperimentArm.objects.exists()


def test_conflicts_are_409_and_store_nothing(line, operator_client, reader_client):
    failed = rule_version(skill=0.0, seed=4, status=ModelStatus.FAILED)
    arms = [{"version": 1, "weight": 0.5}, {"version": failed.version, "weight": 0.5}]
    response = operator_client.post("/clm/experiments", body(arms=arms), format="json")
    assert response.status_code == 409 and "failed" in response.json()["detail"]
    assert reader_client.post("/clm/experiments", body(), format="json").status_code == 403
    assert not Experiment.objects.exists()

    first = operator_client.post("/clm/experiments", body(), format="json")
    assert first.status_code == 201, first.json()
    second = operator_client.post(
        "/clm/experiments",
        body(arms=[{"version": 1, "weight": 0.5}, {"version": 3, "weight": 0.5}]),
        format="json",
    )
    assert (
        second.status_code == 409 and "already has a running experiment" in second.json()["detail"]
    )
    assert Experiment.objects.count() == 1 and ExperimentArm.objects.count() == 2


def test_an_experiment_needs_a_production_version(bars, operator_client):
    rule_version(skill=0.0, seed=1)
    rule_version(skill=0.0, seed=2)
    response = operator_client.post("/clm/experiments", body(), format="json")
    assert response.status_code == 409 and "no production version" in response.json()["detail"]


# ---------------------------------------------------------------------------------------------
# Allocation and reported results


def test_allocation_follows_the_running_experiment(line, operator_client, reader_client):
    before = reader_client.get(f"/clm/models/{MODEL_ID}/allocation").json()
    assert before["experiment_id"] is None
    assert [(a["version"], a["role"], a["weight"]) for a in before["arms"]] == [(1, "control", 1.0)]
    created = operator_client.post("/clm/experiments", body(), format="json").json()
    during = reader_client.get(f"/clm/models/{MODEL_ID}/allocation").json()
    assert during["experiment_id"] == created["id"]
    assert [(a["version"], a["role"], a["weight"], a["status"]) for a in during["arms"]] == [
        (1, "control", 0.8, "production"),
        (2, "candidate", 0.2, "candidate"),
    ]
    assert during["arms"][1]["artifact_sha256"] == line[1].artifact_sha256
    assert reader_client.get("/clm/models/other-nope-1h/allocation").status_code == 404


def test_results_are_taken_only_for_bars_and_versions_that_exist_all_or_none(
    line, bars, operator_client, reader_client
):
    created = operator_client.post("/clm/experiments", body(), format="json").json()
    arrive(bars, 1_010)
    good = [(1, stamp(bars, 1_000), 0.001), (2, stamp(bars, 1_000), 0.002)]
    missing_bar = stamp(bars, 1_010)  # not stored yet
    response = report(operator_client, [*good, (1, missing_bar, 0.0)])
    assert response.status_code == 400 and missing_bar.isoformat() in response.json()["detail"]
    assert not RealisedReturn.objects.exists()

    cases = [
        (report(operator_client, [*good, (7, stamp(bars, 1_001), 0.0)]), 404, "version 7"),
        (report(operator_client, good, experiment=999), 404, "no experiment 999"),
        (report(operator_client, [*good, (3, stamp(bars, 1_001), 0.0)]), 409, "not trading"),
        (report(operator_client, [*good, good[0]]), 400, "twice"),
        (report(operator_client, [(1, stamp(bars, 1_001), float("-2"))]), 400, "return"),
        (report(reader_client, good), 403, "permission"),
    ]
    for response, code, message in cases:
        assert response.status_code == code, response.json()
        assert message in str(response.json())
    assert not RealisedReturn.objects.exists()

    stored = report(operator_client, good)
    assert stored.status_code == 200
    assert stored.json() == {"model_id": MODEL_ID, "experiment_id": created["id"], "stored": 2}
    again = report(operator_client, [(1, stamp(bars, 1_000), 0.005)])  # a correction
    assert again.json()["stored"] == 1
    values = dict(RealisedReturn.objects.values_list("version__version", "value"))
    assert values == {1: 0.005, 2: 0.002}
    assert set(RealisedReturn.objects.values_list("source", flat=True)) == {"reported"}


def test_production_results_are_taken_without_an_experiment(line, bars, operator_client):
    response = report(operator_client, [(1, stamp(bars, 999), -0.01)])
    assert response.status_code == 200 and response.json()["experiment_id"] is None
    refused = report(operator_client, [(2, stamp(bars, 999), 0.01)])
    assert refused.status_code == 409 and "in production" in refused.json()["detail"]


# ---------------------------------------------------------------------------------------------
# Verdicts


def test_a_reported_winner_is_promoted_through_the_service(line, bars, operator_client):
    production, winner, _ = line
    created = operator_client.post("/clm/experiments", body(), format="json").json()
    arrive(bars, 1_150)
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.004, 150)
    rows = []
    for i in range(150):
        moment = stamp(bars, 1_000 + i)
        rows += [(1, moment, base[i]), (2, moment, base[i] + 0.002 + rng.normal(0, 0.002))]
    assert report(operator_client, rows).json()["stored"] == 300

    evaluation = experiment_evaluate(experiment_id=created["id"])
    assert evaluation.decision == "promote" and evaluation.look == 1
    [test] = evaluation.results
    assert test["version"] == 2 and test["rejects"] and test["ci_low"] > 0
    assert test["estimate"] == pytest.approx(0.002, abs=5e-4)
    experiment = Experiment.objects.get(pk=created["id"])
    assert (experiment.status, experiment.decision, experiment.winner_id) == (
        "completed", "promote", winner.pk,
    )  # fmt: skip
    assert experiment.ci_low < experiment.estimate < experiment.ci_high
    assert experiment.p_value < 0.001
    assert status_of(winner) == ModelStatus.PRODUCTION
    assert status_of(production) == ModelStatus.RETIRED
    promoted = LifecycleEvent.objects.filter(version=winner, action="promote").get()
    assert promoted.actor == "experiment" and f"experiment {experiment.pk}" in promoted.reason
    assert "p = " in promoted.reason
    assert OutboxEvent.objects.filter(event_type="model_promoted", payload__version=2).exists()
    assert experiment_evaluate(experiment_id=created["id"]) is None  # over


def test_without_a_winner_production_stays_and_the_verdict_says_so(line, bars, operator_client):
    arms = [{"version": 1, "weight": 0.6}, {"version": 3, "weight": 0.4}]
    created = operator_client.post(
        "/clm/experiments",
        body(arms=arms, metric="sharpe", returns_source="computed"),
        format="json",
    ).json()
    arrive(bars, 1_050)
    assert experiment_step(created["id"]) == "continue"  # the pass's Celery task, in-process
    running = Experiment.objects.get(pk=created["id"])
    assert running.status == "running" and running.n_bars == 50
    assert "next decision at 100 bars" in running.reason
    assert RealisedReturn.objects.filter(source="computed", version__version=3).count() == 50

    arrive(bars, 1_300)
    evaluation = experiment_evaluate(experiment_id=created["id"])
    assert evaluation.decision == "keep_production" and evaluation.tested_bars == 100
    experiment = Experiment.objects.get(pk=created["id"])
    assert experiment.winner is None and experiment.ci_low < 0 < experiment.ci_high
    assert "no candidate proved better" in experiment.reason
    assert status_of(line[0]) == ModelStatus.PRODUCTION
    assert status_of(line[2]) == ModelStatus.CANDIDATE


def test_several_candidates_are_tested_at_alpha_over_their_number(line, bars):
    experiment = experiment_start(
        model_id=MODEL_ID,
        arms=[ArmRequest(1, 0.5), ArmRequest(2, 0.25), ArmRequest(3, 0.25)],
        actor="test", metric="mean_return", stopping_rule="group_sequential", min_bars=100,
        max_bars=300, looks=3, returns_source="computed",
    )  # fmt: skip
    arrive(bars, 1_600)
    evaluation = experiment_evaluate(experiment_id=experiment.pk)
    assert evaluation.decision == "promote" and evaluation.look in (1, 2, 3)
    tests = {row["version"]: row for row in evaluation.results}
    assert set(tests) == {2, 3} and tests[2]["rejects"] and not tests[3]["rejects"]
    # Each comparison runs at 2.5 % (two candidates), at the boundary of the look it decided at.
    design = experiment_design(experiment)
    assert design.alpha == pytest.approx(0.025)
    assert tests[2]["critical"] == design.boundaries[evaluation.look - 1]
    assert evaluation.tested_bars == design.looks[evaluation.look - 1]
    experiment.refresh_from_db()
    assert experiment.winner.version == 2 and status_of(line[1]) == ModelStatus.PRODUCTION


def test_auto_promotion_off_names_the_winner_without_promoting(line, bars):
    experiment = experiment_start(
        model_id=MODEL_ID, arms=[ArmRequest(1, 0.5), ArmRequest(2, 0.5)], actor="test",
        metric="sharpe", stopping_rule="fixed_horizon", min_bars=100, returns_source="computed",
        auto_promote=False,
    )  # fmt: skip
    arrive(bars, 1_200)
    evaluation = experiment_evaluate(experiment_id=experiment.pk)
    assert evaluation.decision == "winner" and "auto-promotion is off" in evaluation.reason
    experiment.refresh_from_db()
    assert experiment.winner.version == 2 and experiment.decision == "winner"
    assert status_of(line[1]) == ModelStatus.CANDIDATE


def test_a_production_change_stops_the_experiment(line, bars):
    experiment = experiment_start(
        model_id=MODEL_ID, arms=[ArmRequest(1, 0.5), ArmRequest(3, 0.5)], actor="test",
        returns_source="computed", min_bars=100,
    )  # fmt: skip
    services.model_version_promote(model_id=MODEL_ID, version=2, actor="op")
    arrive(bars, 1_200)
    assert experiment_evaluate(experiment_id=experiment.pk) is None
    experiment.refresh_from_db()
    assert (experiment.status, experiment.decision) == ("completed", "stopped")
    assert "production v1 is now retired" in experiment.reason


# ---------------------------------------------------------------------------------------------
# API reads, stop, admin


def test_api_lists_shows_and_stops_experiments(line, bars, operator_client, reader_client):
    created = operator_client.post(
        "/clm/experiments", body(returns_source="computed"), format="json"
    ).json()
    arrive(bars, 1_050)
    experiments_evaluate_all()
    listed = reader_client.get(f"/clm/experiments?model_id={MODEL_ID}&status=running").json()
    assert [row["id"] for row in listed["results"]] == [created["id"]]
    assert [arm["weight"] for arm in listed["results"][0]["arms"]] == [0.8, 0.2]
    assert reader_client.get("/clm/experiments?status=completed").json()["count"] == 0
    assert reader_client.get("/clm/experiments?decision=bogus").status_code == 400
    detail = reader_client.get(f"/clm/experiments/{created['id']}").json()
    [step] = detail["evaluations"]
    assert step["decision"] == "continue" and step["results"][0]["version"] == 2
    assert reader_client.get("/clm/experiments/999").status_code == 404

    stop = f"/clm/experiments/{created['id']}/stop"
    assert reader_client.post(stop, {}, format="json").status_code == 403
    stopped = operator_client.post(stop, {"reason": "market closed"}, format="json")
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped" and "market closed" in stopped.json()["reason"]
    assert operator_client.post(stop, {}, format="json").status_code == 409
    assert status_of(line[0]) == ModelStatus.PRODUCTION
    after = reader_client.get(f"/clm/models/{MODEL_ID}/allocation").json()
    assert after["experiment_id"] is None


def test_admin_shows_experiments_on_the_version_page(line, bars, admin_client):
    experiment = experiment_start(
        model_id=MODEL_ID, arms=[ArmRequest(1, 0.7), ArmRequest(3, 0.3)], actor="test",
        returns_source="computed", min_bars=100,
    )  # fmt: skip
    page = admin_client.get(f"/admin/registry/modelversion/{line[2].pk}/change/")
    assert page.status_code == 200 and b"Experiments" in page.content
    for name in ("experiment", "realisedreturn"):
        assert admin_client.get(f"/admin/promotion/{name}/").status_code == 200, name
    detail = admin_client.get(f"/admin/promotion/experiment/{experiment.pk}/change/")
    assert detail.status_code == 200
    response = admin_client.post(
        "/admin/promotion/experiment/",
        {"action": "stop_selected", "_selected_action": [experiment.pk]},
        follow=True,
    )
    assert response.status_code == 200
    experiment.refresh_from_db()
    assert experiment.status == "stopped" and "stopped in the admin" in experiment.reason


def test_started_after_the_latest_bar(line, bars):
    experiment = experiment_start(
        model_id=MODEL_ID, arms=[ArmRequest(1, 0.5), ArmRequest(2, 0.5)], actor="test"
    )
    assert experiment.start_after == stamp(bars, 999)
    assert experiment.start_after + timedelta(hours=1) == stamp(bars, 1_000)


def test_computed_returns_belong_to_their_experiment(line, bars):
    first = experiment_start(
        model_id=MODEL_ID, arms=[ArmRequest(1, 0.5), ArmRequest(3, 0.5)], actor="test",
        returns_source="computed", min_bars=500,
    )  # fmt: skip
    arrive(bars, 1_100)
    experiment_evaluate(experiment_id=first.pk)
    experiment_evaluate(experiment_id=first.pk)  # nothing new: nothing stored twice
    assert RealisedReturn.objects.filter(experiment=first).count() == 200
    experiment_stop(experiment_id=first.pk, actor="test")
    second = experiment_start(
        model_id=MODEL_ID, arms=[ArmRequest(1, 0.5), ArmRequest(3, 0.5)], actor="test",
        returns_source="computed", min_bars=500,
    )  # fmt: skip
    arrive(bars, 1_150)
    experiment_evaluate(experiment_id=second.pk)
    # Its window starts at its own start: the first bar carries only the entry cost.
    assert RealisedReturn.objects.filter(experiment=second).count() == 100
    first_bar = RealisedReturn.objects.filter(experiment=second).order_by("timestamp").first()
    assert first_bar.timestamp == stamp(bars, 1_100) and first_bar.value <= 0
