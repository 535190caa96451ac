"""Evolution services: runs on real data in-process, claims, failures, selection, proposals."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from evolution import selectors, services
from evolution.models import (
    CandidateOrigin,
    CandidateStatus,
    EvaluationStatus,
    GenerationStatus,
    RunStatus,
    StrategyCandidate,
)
from evolution.search_space import DEFAULT_SPACES
from evolution.services import evaluation, runs, upkeep
from registry import services as registry_services
from registry.models import (
    EvaluationResult,
    EventType,
    JobStatus,
    ModelStatus,
    OutboxEvent,
    TrainingJob,
    TriggerReason,
)
from tests.conftest import version_add
from training.pipeline import run_job
from training.promotion.models import PromotionPolicy

from .conftest import N_BARS, SYMBOL

pytestmark = pytest.mark.django_db


def _candidates(run, number: int | None = None):
    qs = StrategyCandidate.objects.filter(run=run).defer("oos_returns")
    if number is not None:
        qs = qs.filter(generation__number=number)
    return qs.order_by("generation__number", "index")


# ---------------------------------------------------------------------------------------------
# Starting a run


def test_a_run_records_its_settings_and_first_generation(make_run):
    run = make_run()
    assert run.status == RunStatus.RUNNING and run.current_generation == 1
    assert run.n_bars == 2_000 and run.window_start < run.window_end
    assert run.fee == 0.0005 and run.eval_fraction == 0.25  # the policy defaults, pinned
    assert run.validation_fraction == 0.2
    generation = run.generation_set.get()
    assert generation.status == GenerationStatus.EVALUATING
    candidates = list(_candidates(run))
    assert [c.index for c in candidates] == list(range(6))
    assert {c.origin for c in candidates} == {CandidateOrigin.RANDOM}
    for c in candidates:
        assert c.evaluation_status == EvaluationStatus.PENDING
        assert c.base_strategy == "xgboost-evousdt-1h"
        assert 10 <= c.params["n_estimators"] <= 30 and c.params["n_jobs"] == 1
        assert set(c.params["features"]) >= {"horizon", "ma_windows", "rsi_period"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model_type": "nhits"}, "model_type"),
        ({"timeframe": "2h"}, "timeframe"),
        ({"population_size": 2}, "population_size"),
        ({"generations": 0}, "generations"),
        ({"symbol": "NODATA"}, "symbol"),
        ({"search_space": {"max_depth": {"low": 9, "high": 3}}}, "search_space.max_depth"),
        ({"search_space": {"validation_fraction": 0.0}}, "search_space"),
    ],
)
def test_bad_run_settings_are_refused(make_run, overrides, field):
    with pytest.raises(InvalidInput) as caught:
        make_run(**overrides)
    assert caught.value.field == field


def test_the_same_seed_proposes_the_same_first_generation(make_run):
    first, second = make_run(seed=11), make_run(seed=11)
    other = make_run(seed=12)
    genomes = [[c.genome for c in _candidates(run)] for run in (first, second, other)]
    assert genomes[0] == genomes[1] != genomes[2]


# ---------------------------------------------------------------------------------------------
# A whole run, in this process


@pytest.mark.slow
def test_a_seeded_run_improves_hypervolume_over_generations(make_run):
    run = make_run(population_size=8, generations=3, seed=3)
    run = services.evolution_run_execute(run_id=run.pk)
    assert run.status == RunStatus.COMPLETED and run.finished_at is not None
    generations = list(run.generation_set.order_by("number"))
    assert [g.number for g in generations] == [1, 2, 3]
    volumes = [g.hypervolume for g in generations]
    assert volumes[-1] > volumes[0] > 0, volumes
    assert all(b >= a for a, b in itertools.pairwise(volumes)), volumes
    for g in generations:
        assert g.status == GenerationStatus.COMPLETE and g.front
        assert g.n_evaluated + g.n_failed == 8 and g.evaluation_seconds > 0
        assert g.search_seconds > 0
        assert all(e["trades"] >= run.min_trades for e in g.front)
    # Offspring descend from earlier generations of the same run, and say how.
    for child in _candidates(run, 3):
        assert child.origin in (CandidateOrigin.CROSSOVER, CandidateOrigin.MUTATION)
        parents = list(child.parents.all())
        assert parents and all(p.run_id == run.pk and p.generation.number < 3 for p in parents)
        assert child.mutation_description.split()[0] in ("SBX", "polynomial")
    # Evaluated candidates carry METRICS.md metrics, objectives and their return series.
    best = _candidates(run).filter(pareto_rank=0).first()
    assert set(best.metrics) >= {"sharpe", "max_drawdown", "profit_factor", "trades", "psr"}
    assert best.objectives["F"][0] == -best.metrics["sharpe"]
    assert best.fitness is not None and best.fitness > -1
    assert len(selectors.candidate_returns(candidate=best)) > 100


def test_a_failed_candidate_does_not_sink_its_generation(make_run, monkeypatch):
    run = make_run(population_size=4, generations=1)
    broken = _candidates(run).first()
    broken.params = {**broken.params, "max_depth": "deep"}
    broken.save(update_fields=["params"])
    run = services.evolution_run_execute(run_id=run.pk)
    assert run.status == RunStatus.COMPLETED
    broken.refresh_from_db()
    assert broken.evaluation_status == EvaluationStatus.FAILED
    assert broken.status == CandidateStatus.FAILED and "max_depth" in broken.error_message
    generation = run.generation_set.get()
    assert (generation.n_evaluated, generation.n_failed) == (3, 1)
    assert broken.pareto_rank is None and broken.fitness is None


def test_a_generation_where_everything_fails_fails_the_run(make_run):
    run = make_run(population_size=4, generations=2)
    for c in _candidates(run):
        c.params = {**c.params, "features": {"rsi_period": 1}}
        c.save(update_fields=["params"])
    run = services.evolution_run_execute(run_id=run.pk)
    assert run.status == RunStatus.FAILED
    assert "every candidate of generation 1 failed" in run.error_message
    assert run.generation_set.count() == 1


def test_a_run_ends_when_the_space_has_nothing_new_to_offer(make_run):
    fixed = {
        gene.name: gene.choices[0] if gene.choices else gene.low
        for gene in DEFAULT_SPACES["xgboost"]
    }
    fixed.update(n_estimators=10, early_stopping_rounds=0, max_depth={"low": 2, "high": 3})
    run = make_run(population_size=4, generations=5, search_space=fixed)
    assert _candidates(run).count() == 2  # only two parameter sets exist
    run = services.evolution_run_execute(run_id=run.pk)
    assert run.status == RunStatus.COMPLETED and "no untried parameter set" in run.error_message
    assert run.generation_set.count() == 1


# ---------------------------------------------------------------------------------------------
# Claims: a candidate is evaluated once


def test_a_candidate_is_claimed_once(make_run):
    candidate = _candidates(make_run()).first()
    token = services.candidate_claim(candidate_id=candidate.pk)
    assert token is not None
    assert services.candidate_claim(candidate_id=candidate.pk) is None  # someone has it
    assert services.candidate_evaluate(candidate_id=candidate.pk) == "skipped"
    candidate.refresh_from_db()
    assert candidate.evaluation_status == EvaluationStatus.RUNNING and candidate.attempts == 1


def test_a_redelivery_takes_over_only_a_dead_claim_and_the_first_cannot_record(make_run):
    """A redelivered message leaves a claim whose heartbeat is fresh alone (a dropped connection
    redelivers while the worker still runs); once the heartbeat is stale (the worker died) it
    reclaims, and were the first worker still alive its result would be discarded (the claim
    token changed)."""
    candidate = _candidates(make_run()).first()
    stale = services.candidate_claim(candidate_id=candidate.pk)
    assert services.candidate_evaluate(candidate_id=candidate.pk, redelivered=True) == "skipped"
    assert services.candidate_heartbeat(candidate_id=candidate.pk, token=stale)
    long_ago = timezone.now() - services.claim_lease() - timedelta(seconds=1)
    StrategyCandidate.objects.filter(pk=candidate.pk).update(claimed_at=long_ago)
    assert services.candidate_evaluate(candidate_id=candidate.pk, redelivered=True) == "evaluated"
    assert not services.candidate_heartbeat(candidate_id=candidate.pk, token=stale)
    candidate.refresh_from_db()
    assert candidate.attempts == 2 and candidate.evaluation_status == EvaluationStatus.EVALUATED
    assert not evaluation._record_failure(candidate.pk, stale, "late")
    assert services.candidate_evaluate(candidate_id=candidate.pk, redelivered=True) == "skipped"
    candidate.refresh_from_db()
    assert candidate.attempts == 2 and candidate.error_message == ""


def test_an_expired_claim_is_taken_over_and_attempts_are_capped(make_run):
    candidate = _candidates(make_run()).first()
    services.candidate_claim(candidate_id=candidate.pk)
    long_ago = timezone.now() - services.claim_lease() - timedelta(seconds=1)
    StrategyCandidate.objects.filter(pk=candidate.pk).update(claimed_at=long_ago)
    assert (
        services.candidate_claim(candidate_id=candidate.pk) is not None
    )  # no heartbeat within the lease
    StrategyCandidate.objects.filter(pk=candidate.pk).update(claimed_at=long_ago)
    assert services.candidate_claim(candidate_id=candidate.pk) is None  # MAX_ATTEMPTS reached
    candidate.refresh_from_db()
    assert candidate.evaluation_status == EvaluationStatus.FAILED
    assert "gave up after 2 attempts" in candidate.error_message


@pytest.mark.slow
def test_a_crash_mid_generation_then_resume_loses_nothing(make_run):
    """In-process version of the worker test: two candidates done, one left running by a dead
    process, the rest pending; resuming finishes every candidate exactly once."""
    run = make_run(population_size=5, generations=2)
    first = list(_candidates(run, 1))
    for c in first[:2]:
        assert services.candidate_evaluate(candidate_id=c.pk) == "evaluated"
    services.candidate_claim(candidate_id=first[2].pk)  # the dead process's claim
    services.evolution_run_resume(run_id=run.pk, actor="ops", dispatch=False)
    run = services.evolution_run_execute(run_id=run.pk)
    assert run.status == RunStatus.COMPLETED
    rows = _candidates(run)
    assert rows.count() == 10
    assert set(rows.values_list("evaluation_status", flat=True)) == {EvaluationStatus.EVALUATED}
    attempts = dict(rows.values_list("pk", "attempts"))
    assert attempts.pop(first[2].pk) == 2 and set(attempts.values()) == {1}
    assert Counter(rows.values_list("generation__number", flat=True)) == {1: 5, 2: 5}


# ---------------------------------------------------------------------------------------------
# Stop and resume


def test_stop_and_resume_rules(make_run):
    run = make_run(population_size=4, generations=1)
    services.evolution_run_stop(run_id=run.pk, actor="ops")
    candidate = _candidates(run).first()
    assert services.candidate_evaluate(candidate_id=candidate.pk) == "run stopped"
    candidate.refresh_from_db()
    assert candidate.evaluation_status == EvaluationStatus.PENDING  # left for the resume
    with pytest.raises(DomainError, match="only a running run stops"):
        services.evolution_run_stop(run_id=run.pk, actor="ops")
    services.evolution_run_resume(run_id=run.pk, actor="ops", dispatch=False)
    run = services.evolution_run_execute(run_id=run.pk)
    assert run.status == RunStatus.COMPLETED
    with pytest.raises(DomainError, match="only stopped or running runs resume"):
        services.evolution_run_resume(run_id=run.pk, actor="ops")
    with pytest.raises(NotFound):
        services.evolution_run_stop(run_id=uuid.uuid4(), actor="ops")


def test_generation_advance_is_idempotent_and_waits_for_every_candidate(make_run):
    run = make_run(population_size=4, generations=2)
    generation = run.generation_set.get()
    assert services.generation_advance(generation_id=generation.pk, dispatch=False) == "waiting"
    for c in _candidates(run, 1):
        services.candidate_evaluate(candidate_id=c.pk)
    assert services.generation_advance(generation_id=generation.pk, dispatch=False) == (
        "proposed generation 2"
    )
    assert services.generation_advance(generation_id=generation.pk, dispatch=False) == (
        "evaluating"
    )
    assert run.generation_set.count() == 2 and _candidates(run).count() == 8


def test_the_reaper_continues_stalled_runs_and_releases_dead_claims(
    make_run, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[int] = []
    for module in (runs, upkeep):  # the run and upkeep services both dispatch generations
        monkeypatch.setattr(module, "generation_dispatch", lambda generation_id: sent.append(1))
    run = make_run(population_size=4, generations=2)
    for c in _candidates(run, 1):
        services.candidate_evaluate(candidate_id=c.pk)
    # The gathering worker died after completing generation 1, before proposing generation 2.
    services.generation_complete(generation_id=run.generation_set.get().pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.evolution_runs_reap()["continued"] == 1
    assert run.generation_set.count() == 2 and sent == [1]
    # A claim of a worker that vanished with its message, in a generation idle for long.
    stuck = _candidates(run, 2).first()
    services.candidate_claim(candidate_id=stuck.pk)
    long_ago = timezone.now() - services.claim_lease() - timedelta(minutes=1)
    StrategyCandidate.objects.filter(pk=stuck.pk).update(claimed_at=long_ago)
    run.generation_set.filter(number=2).update(created_at=long_ago)
    counts = services.evolution_runs_reap()
    assert counts["released"] == 1 and counts["redispatched"] == 1 and sent == [1, 1]
    stuck.refresh_from_db()
    assert stuck.evaluation_status == EvaluationStatus.PENDING


# ---------------------------------------------------------------------------------------------
# Selection for production


@pytest.fixture
def evaluated(make_run):
    """An evaluated candidate of a 4-candidate run; the DSR gate is off so that selection itself
    is what the tests see (its DSR over the 4 trials is below the default 0.95)."""
    run = services.evolution_run_execute(run_id=make_run(population_size=4, generations=1).pk)
    PromotionPolicy.objects.create(model_type="xgboost", min_dsr=None)
    return _candidates(run).filter(evaluation_status=EvaluationStatus.EVALUATED).first()


def test_by_default_a_candidate_below_dsr_095_is_refused(evaluated):
    PromotionPolicy.objects.filter(model_type="xgboost").delete()  # the defaults apply
    scored = [
        (selectors.candidate_deflated_sharpe(candidate=c), c)
        for c in _candidates(evaluated.run).filter(evaluation_status=EvaluationStatus.EVALUATED)
    ]
    (dsr, trials), weakest = min(scored, key=lambda item: item[0][0])
    assert trials == 4 and dsr < 0.95
    with pytest.raises(DomainError, match=r"require at least 0\.95"):
        services.candidate_select(candidate_id=weakest.pk, actor="alice")
    assert not TrainingJob.objects.exists()


def test_selecting_creates_a_training_job_and_an_event_at_once(evaluated):
    candidate, job = services.candidate_select(candidate_id=evaluated.pk, actor="alice")
    assert job.trigger_reason == TriggerReason.STRATEGY_EVOLUTION
    assert job.params == evaluated.params and job.symbol == SYMBOL
    assert job.trigger_context["candidate_id"] == str(evaluated.pk)
    assert candidate.status == CandidateStatus.TRAINING and candidate.training_job == job
    # K: every candidate evaluated on EVOUSDT 1h (the four of the run), DSR beside Sharpe.
    assert candidate.dsr_trials == 4 and 0.0 <= candidate.dsr <= 1.0
    assert job.trigger_context["dsr"] == candidate.dsr
    # The job is tested after the last bar any candidate of the run was scored on.
    seen = [
        c.training_metrics["seen_until"]
        for c in _candidates(evaluated.run).filter(evaluation_status=EvaluationStatus.EVALUATED)
    ]
    assert job.trigger_context["search_seen_until"] == max(seen)
    assert evaluated.training_metrics["split"]["validation"][1] < N_BARS
    event = OutboxEvent.objects.get(event_type=EventType.STRATEGY_CANDIDATE_CREATED)
    assert event.model_id == "xgboost-evousdt-1h" and event.payload["job_id"] == str(job.pk)
    assert event.payload["metrics"]["sharpe"] == evaluated.metrics["sharpe"]
    with pytest.raises(DomainError, match="only proposed candidates"):
        services.candidate_select(candidate_id=evaluated.pk, actor="alice")


def test_selection_refuses_unevaluated_candidates_and_a_busy_model(evaluated, make_run):
    pending = _candidates(make_run()).first()
    with pytest.raises(DomainError, match="not evaluated"):
        services.candidate_select(candidate_id=pending.pk, actor="alice")
    busy, _ = registry_services.training_job_create(
        request=registry_services.JobRequest(model_type="xgboost", symbol=SYMBOL, timeframe="1h"),
        dispatch=False,
    )
    with pytest.raises(DomainError, match="already has an active training job"):
        services.candidate_select(candidate_id=evaluated.pk, actor="alice")
    evaluated.refresh_from_db()
    busy.refresh_from_db()
    assert evaluated.status == CandidateStatus.PROPOSED and evaluated.training_job is None
    assert busy.joined_triggers == []  # rolled back with the refusal
    assert not OutboxEvent.objects.filter(event_type=EventType.STRATEGY_CANDIDATE_CREATED).exists()


def test_the_gates_can_require_a_deflated_sharpe_ratio(evaluated):
    PromotionPolicy.objects.filter(model_type="xgboost").update(min_dsr=0.999999)
    with pytest.raises(DomainError, match="deflated Sharpe ratio") as caught:
        services.candidate_select(candidate_id=evaluated.pk, actor="alice")
    assert caught.value.extra["min_dsr"] == 0.999999 and caught.value.extra["dsr_trials"] == 4
    assert not TrainingJob.objects.exists()


def test_pipeline_trials_count_candidates_on_the_same_data(evaluated):
    """The pipeline's DSR K includes candidates on the symbol/timeframe, less the one trained."""
    others = selectors.candidate_trial_sharpes(symbol=SYMBOL, timeframe="1h")
    assert len(others) == 4
    assert len(selectors.candidate_trial_sharpes(
        symbol=SYMBOL, timeframe="1h", exclude=evaluated.pk)) == 3  # fmt: skip
    assert selectors.candidate_trial_sharpes(symbol=SYMBOL, timeframe="4h") == []
    assert len(selectors.candidate_trial_sharpes(symbol=SYMBOL, timeframe="1h", exclude="x")) == 4


def test_the_selected_candidates_version_is_deflated_by_every_trial_on_its_data(evaluated):
    """The pipeline's DSR counts the run's other candidates as trials, and the gate applies."""
    PromotionPolicy.objects.filter(model_type="xgboost").update(min_dsr=0.0, min_trades=5)
    candidate, job = services.candidate_select(candidate_id=evaluated.pk, actor="alice")
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    evaluation = EvaluationResult.objects.get(version__produced_by=job)
    # The three other candidates of the run, plus this evaluation (its own candidate is the
    # trial this evaluation repeats, so it is not counted twice).
    assert evaluation.n_trials == 4
    assert "dsr" in evaluation.gates and evaluation.dsr <= evaluation.psr
    # Re-evaluated on bars after everything the search saw: its fitness was the validation
    # window's, the version's evaluation is the test window's.
    windows = evaluation.version.manifest["windows"]
    assert (
        evaluation.version.manifest["search_seen_until"] == job.trigger_context["search_seen_until"]
    )
    assert windows["test"]["first"] > job.trigger_context["search_seen_until"]
    # Other candidates of the run (other horizons, other warm-ups) saw a few bars more than
    # this one: the test window starts after those too, never earlier than its own split's.
    own = evaluated.training_metrics["split"]
    assert windows["test"]["rows"][0] >= own["evaluate"][0] > own["validation"][1]
    assert evaluation.window_start.isoformat() == windows["test"]["first"]
    assert services.candidates_sync_lifecycle() == 1
    candidate.refresh_from_db()
    assert candidate.produced_version == evaluation.version
    assert candidate.status != CandidateStatus.TRAINING


def test_lifecycle_follows_the_registry(evaluated):
    candidate, job = services.candidate_select(candidate_id=evaluated.pk, actor="alice")
    version = version_add(symbol=SYMBOL, status=ModelStatus.PRODUCTION)
    TrainingJob.objects.filter(pk=job.pk).update(version=version, status=JobStatus.COMPLETED)
    assert services.candidates_sync_lifecycle() == 1
    candidate.refresh_from_db()
    assert candidate.status == CandidateStatus.ACTIVE and candidate.produced_version == version


# ---------------------------------------------------------------------------------------------
# Proposals outside runs: the original design's operations


def test_poor_production_performance_proposes_mutations_of_it(evo_bars):
    version = version_add(symbol=SYMBOL, status=ModelStatus.PRODUCTION)
    data = {"model_id": "xgboost-evousdt-1h", "sharpe": 0.2}
    assert services.propose_new_candidates(performance_data={**data, "sharpe": 1.2}) == []
    children = services.propose_new_candidates(performance_data=data, n=3, dispatch=False)
    assert len(children) == 3
    root = StrategyCandidate.objects.get(origin=CandidateOrigin.MANUAL)
    assert root.produced_version == version and root.status == CandidateStatus.ACTIVE
    for child in children:
        assert child.origin == CandidateOrigin.MUTATION and list(child.parents.all()) == [root]
        assert "production v1 Sharpe 0.200 < 0.5" in child.mutation_description
        assert child.params != root.params and child.run is None
    again = services.propose_new_candidates(
        performance_data={**data, "regime": "volatile"}, n=1, dispatch=False
    )
    assert again[0].origin == CandidateOrigin.REGIME_ADAPTATION
    assert StrategyCandidate.objects.filter(origin=CandidateOrigin.MANUAL).count() == 1
    with pytest.raises(NotFound):
        services.propose_new_candidates(performance_data={"model_id": "nope", "sharpe": 0.1})


def test_mutate_crossover_and_update_performance(evaluated):
    other = (
        StrategyCandidate.objects.filter(run=evaluated.run)
        .exclude(pk=evaluated.pk)
        .defer("oos_returns")
        .first()
    )
    child = services.mutate_strategy(parent_id=evaluated.pk, seed=4, dispatch=False)
    assert child.origin == CandidateOrigin.MUTATION and child.run is None
    assert child.params != evaluated.params
    cross = services.crossover_strategies(
        first_id=evaluated.pk, second_id=other.pk, seed=4, dispatch=False
    )
    assert set(cross.parents.all()) == {evaluated, other}
    with pytest.raises(InvalidInput):
        services.crossover_strategies(first_id=evaluated.pk, second_id=evaluated.pk)
    # A standalone candidate is evaluated with the policy's settings on all bars.
    assert services.candidate_evaluate(candidate_id=child.pk) in ("evaluated", "failed")
    updated = services.candidate_update_performance(
        candidate_id=cross.pk,
        metrics={"sharpe": 1.1, "max_drawdown": 0.1, "profit_factor": 1.5, "trades": 70},
    )
    assert updated.evaluation_status == EvaluationStatus.EVALUATED and updated.feasible
    assert updated.objectives["sharpe"] == 1.1
    with pytest.raises(InvalidInput, match="unknown metrics"):
        services.candidate_update_performance(candidate_id=cross.pk, metrics={"alpha": 1})


def test_select_top_candidates_and_stats(evaluated):
    top = selectors.select_top_candidates(n=2, run=evaluated.run_id, min_trades=5)
    assert len(top) == 2
    ranks = [standing.rank for _, standing in top]
    assert ranks == sorted(ranks, key=lambda r: (r is None, r or 0))  # infeasible last
    stats = selectors.evolution_stats()
    assert stats["candidates"] == 4 and stats["runs"]["completed"] == 1
    assert stats["by_origin"]["random"] == 4 and stats["best_sharpe"] is not None


def test_lineage_walks_ancestors_once(evaluated):
    child = services.mutate_strategy(parent_id=evaluated.pk, seed=1, dispatch=False)
    grandchild = services.mutate_strategy(parent_id=child.pk, seed=2, dispatch=False)
    lineage = selectors.candidate_lineage(candidate=grandchild, depth=5)
    assert [(c.pk, depth) for c, depth, _ in lineage.ancestors] == [
        (child.pk, 1),
        (evaluated.pk, 2),
    ]
    assert lineage.ancestors[0][2] == [str(evaluated.pk)]
    assert [c.pk for c in selectors.candidate_lineage(candidate=evaluated).children] == [child.pk]
    assert selectors.candidate_lineage(candidate=grandchild, depth=1).ancestors[0][0] == child
