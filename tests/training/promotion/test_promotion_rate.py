"""False promotions on a market with no edge, and true ones on a market with an edge.

A pure random walk cannot be traded at a profit: every version promoted on it is a false
promotion. Many jobs of every family (retrains of the same model lines, so the DSR's trial count
grows) and an evolution run whose best candidates are selected and trained go through the real
pipeline with the default policy (gates of METRICS.md, the DSR gate at 0.95, the test window of
docs/evaluation.md). At most 5 % of their versions may be promoted; with 72 or more versions and
none promoted, the whole 95 % Clopper-Pearson interval is below 5 %. A version whose evaluation
read bars it was fitted or selected on would look skilled and be promoted here. On the synthetic
market's mean-reverting regime, a real edge, the trees must still get through.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from clm_project.exceptions import DomainError
from evolution import services as evolution_services
from evolution.models import EvaluationStatus
from evolution.selectors import select_top_candidates
from registry.models import EvaluationResult, LifecycleEvent, TrainingJob
from registry.services import JobRequest, training_job_create
from tests.training.test_trainers import TINY
from training.data.bars import bars_frame, bars_import
from training.data.dataset import Bars
from training.data.synthetic import generate_bars
from training.pipeline import run_job
from training.promotion.gates import GateThresholds, apply_gates
from training.promotion.models import PromotionPolicy

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

N_BARS = 2_000  # 450 test bars after the 199-bar warm-up, 360 validation bars
FAMILIES = ("xgboost", "lightgbm", "nhits", "patchtst", "rl_v2", "rl_v3")
# Small budgets (the trees' defaults are already cheap): many jobs in a few minutes on 2 cores.
BUDGETS = {
    family: ({} if family in ("xgboost", "lightgbm") else TINY[family]) for family in FAMILIES
}
MARKETS_PER_FAMILY = 3
RETRAINS = 4  # versions per model line: the DSR counts each line's earlier evaluations
EVOLUTION_SPACE = {
    "n_estimators": {"low": 20, "high": 80},
    "max_depth": {"low": 2, "high": 5},
    "early_stopping_rounds": 0,
    "calibration": {"choices": ["none", "platt"]},
}
EVOLUTION_SELECTED = 4
EDGE_BARS = 3_000  # enough test bars for the 50 trades the default gate asks


def random_walk_bars(n_bars: int, *, seed: int, sigma: float = 0.004) -> Bars:
    """Hourly bars whose log returns are i.i.d. normal: no feature can predict the next one."""
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n_bars)))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    reach = np.exp(np.abs(rng.normal(0.0, 0.6 * sigma, (2, n_bars))))
    timestamp = np.datetime64("2024-01-01T00:00:00", "s") + np.arange(n_bars) * np.timedelta64(
        3_600, "s"
    )
    return Bars(
        timestamp=timestamp,
        open=open_,
        high=np.maximum(open_, close) * reach[0],
        low=np.minimum(open_, close) / reach[1],
        close=close,
        volume=1_000.0 * np.exp(0.3 * rng.standard_normal(n_bars)),
    )


def clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    low = stats.beta.ppf(tail, hits, n - hits + 1) if hits else 0.0
    high = stats.beta.ppf(1 - tail, hits + 1, n - hits) if hits < n else 1.0
    return float(low), float(high)


def _store(symbol: str, bars: Bars) -> None:
    bars_import(frame=bars_frame(bars), symbol=symbol, timeframe="1h")


def _train(family: str, symbol: str, seed: int) -> TrainingJob:
    job, _ = training_job_create(
        request=JobRequest(
            model_type=family, symbol=symbol, timeframe="1h", params=BUDGETS[family], seed=seed
        ),
        dispatch=False,
    )
    run_job(job_id=str(job.pk))
    return TrainingJob.objects.select_related("version").get(pk=job.pk)


def _promoted(job: TrainingJob) -> bool:
    """Promoted, or sent to shadow production (where it may be promoted without a retrain)."""
    return LifecycleEvent.objects.filter(
        version=job.version, to_status__in=("production", "shadow")
    ).exists()


def test_on_a_random_walk_at_most_5_percent_of_versions_are_promoted() -> None:
    jobs: list[TrainingJob] = []
    for f, family in enumerate(FAMILIES):
        for m in range(MARKETS_PER_FAMILY):
            symbol = f"RW{f}M{m}"
            _store(symbol, random_walk_bars(N_BARS, seed=1_000 * f + m))
            jobs += [_train(family, symbol, seed) for seed in range(RETRAINS)]

    # An evolution run on its own random walk; its best candidates are selected and trained.
    _store("RWEVO", random_walk_bars(N_BARS, seed=99))
    run = evolution_services.evolution_run_create(
        request=evolution_services.RunRequest(
            model_type="xgboost", symbol="RWEVO", timeframe="1h", population_size=8,
            generations=2, seed=5, min_trades=5, search_space=EVOLUTION_SPACE,
        ),
        dispatch=False,
    )  # fmt: skip
    evolution_services.evolution_run_execute(run_id=run.pk)
    top = select_top_candidates(n=EVOLUTION_SELECTED, run=run.pk)
    assert top and all(c.evaluation_status == EvaluationStatus.EVALUATED for c, _ in top)
    looked_good = sum(apply_gates(c.metrics, GateThresholds(min_dsr=None))[1] for c, _ in top)
    refused = []
    for candidate, _ in top:
        try:
            _, job = evolution_services.candidate_select(candidate_id=candidate.pk, actor="test")
        except DomainError:  # its DSR over the run's trials is below 0.95: refused here
            refused.append(candidate)
            continue
        run_job(job_id=str(job.pk))
        jobs.append(TrainingJob.objects.select_related("version").get(pk=job.pk))
    # The refused winners with the DSR gate off: only the test window stands between them and
    # production. Their fitness (validation) Sharpe is what selected them; their test Sharpe is
    # what they are worth.
    PromotionPolicy.objects.create(model_type="xgboost", min_dsr=None)
    fitness_sharpes, test_sharpes = [], []
    for candidate in refused:
        _, job = evolution_services.candidate_select(candidate_id=candidate.pk, actor="test")
        run_job(job_id=str(job.pk))
        job = TrainingJob.objects.select_related("version").get(pk=job.pk)
        jobs.append(job)
        fitness_sharpes.append(candidate.metrics["sharpe"])
        test_sharpes.append(EvaluationResult.objects.get(version=job.version).sharpe)

    versions = [job for job in jobs if job.version is not None]
    promoted = [job for job in versions if _promoted(job)]
    evaluated = EvaluationResult.objects.filter(version__in=[job.version for job in versions])
    low, high = clopper_pearson(len(promoted), len(versions))
    share = len(promoted) / len(versions)
    print(
        f"\nrandom walk: {len(promoted)} of {len(versions)} versions promoted ({share:.1%}, 95 % "
        f"Clopper-Pearson [{low:.1%}, {high:.1%}]); gates passed without the DSR by "
        f"{sum(_passed_without_dsr(e) for e in evaluated)}; evolution: {len(top)} best "
        f"candidates, {looked_good} passing the gates on their fitness window, {len(refused)} "
        f"refused at selection by the DSR; trained with the DSR off, mean Sharpe "
        f"{np.mean(fitness_sharpes or [np.nan]):.2f} on the fitness (validation) window, "
        f"{np.mean(test_sharpes or [np.nan]):.2f} on the test window"
    )
    assert len(versions) >= len(FAMILIES) * MARKETS_PER_FAMILY * RETRAINS + EVOLUTION_SELECTED
    assert share <= 0.05, [(j.model.model_id, j.version.version) for j in promoted]


def _passed_without_dsr(evaluation: EvaluationResult) -> bool:
    return all(gate["passed"] for name, gate in evaluation.gates.items() if name != "dsr")


def test_on_a_market_with_an_edge_good_models_still_get_through() -> None:
    """The synthetic market's mean-reverting regime throughout: returns revert within a few bars,
    which the trees learn; with the same default policy their versions are promoted."""
    jobs = []
    for family in ("xgboost", "lightgbm"):
        for m in range(2):
            symbol = f"MR{family[0].upper()}{m}"
            regime = [("mean_reverting", EDGE_BARS)]
            _store(symbol, generate_bars(EDGE_BARS, seed=100 + m, regimes=regime)[0])
            jobs.append(_train(family, symbol, 0))
    promoted = [job for job in jobs if _promoted(job)]
    sharpes = [f"{job.version.evaluations.get().sharpe:.1f}" for job in jobs]
    print(
        f"\nmean-reverting market: {len(promoted)} of {len(jobs)} tree versions promoted "
        f"(test Sharpe {', '.join(sharpes)})"
    )
    assert len(promoted) >= len(jobs) - 1
