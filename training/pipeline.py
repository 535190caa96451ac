"""The 10-step training pipeline of the original design, for one job.

Each step is a short transaction (or none): training runs outside any transaction, so a long fit
never holds a lock. Progress and per-step wall time are written to the job in the one statement
that starts the next step (the claim, for fetch_data; register's own write of the job, for
evaluate) or completes the job; any error is stored on the job with the step it
happened in, and a version registered before the error is marked failed rather than left in
`training`. What depends on the bars alone (the bars themselves, features, the causality verdict,
regime labels, the incumbent's scores) is kept per worker by what it was computed from.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any

import numpy as np
from django.conf import settings

from clm_project import metrics
from clm_project.compiled import CompiledQuery
from clm_project.exceptions import DomainError
from clm_project.logging import log_context
from registry import selectors as registry_selectors
from registry import services
from registry.artifacts import artifact_load, artifact_save
from registry.liveness import Heartbeat
from registry.models import EvaluationResult, JobStatus, ModelStatus, ModelVersion, TrainingJob
from training.data.bars import as_datetime, as_datetime64, get_data_loader
from training.data.calendars import Annualisation
from training.data.dataset import Bars, Dataset
from training.data.prepare import MIN_BARS, dataset_for, leaking_features, prepare_training
from training.data.selectors import series_annualisation
from training.data.split import Split
from training.evaluation.backtest import BacktestResult, backtest, deflated_sharpe
from training.evaluation.plots import equity_curve_points, equity_series_npz
from training.evaluation.regime_slices import (
    RegimeEvaluation,
    evaluate_by_regime,
    window_regime_labels,
)
from training.promotion.decision import Outcome, decide, enact
from training.promotion.gates import apply_gates
from training.promotion.policies import EvaluationPolicy, evaluation_policy_for
from training.promotion.shadow import shadow_policy_for, shadow_start, shadow_wanted
from training.trainers import Trainer, trainer_class

logger = logging.getLogger(__name__)

# The validation window's backtest figures kept in a version's training metrics (prefixed
# `validation_`): what selection steps such as the shadow pre-check read.
VALIDATION_METRICS = ("sharpe", "total_return", "max_drawdown", "trades")

LIBRARIES = (
    "numpy", "pandas", "scikit-learn", "xgboost-cpu", "lightgbm", "torch", "neuralforecast",
    "stable-baselines3", "gymnasium", "Django", "celery",
)  # fmt: skip

# Cumulative progress reached when each step finishes.
STEPS: dict[str, float] = {
    "start": 0.05,
    "fetch_data": 0.15,
    "train": 0.60,
    "register": 0.65,
    "publish_trained": 0.67,
    "evaluate": 0.85,
    "save_evaluation": 0.90,
    "publish_evaluated": 0.92,
    "apply_gates": 0.98,
    "complete": 1.0,
}


class PipelineError(Exception):
    """A step refused to go on (too little data, bad params); stored on the job as its error."""


@dataclass
class Run:
    """What a failure needs to clean up, and what the job records when it completes: the job, its
    policy, the version once registered, and the model's own wall time in train and evaluate."""

    job: TrainingJob
    policy: EvaluationPolicy
    attempt: int = 0
    version: ModelVersion | None = None
    model_seconds: dict[str, float] = field(default_factory=dict)
    # The steps finished since the last write and their wall times, recorded when the next step
    # starts (one write for both) or, after the last step, when the job completes.
    finished: dict[str, float] = field(default_factory=dict)
    # The step the job's row already shows it in: written by the claim (fetch_data) or by the
    # transaction that ended the step before it (_Step.hand_over), not by a write of its own.
    entered: str | None = None


@dataclass(frozen=True)
class Trained:
    """The train step's result: the dataset and split it was fitted on, the fitted trainer, its
    training metrics (the validation window's backtest among them) and, for a candidate chosen by
    a search, the last bar that search saw (the test window starts a purge after it)."""

    dataset: Dataset
    split: Split
    trainer: Trainer
    metrics: dict[str, Any]
    search_seen_until: np.datetime64 | None = None


@dataclass(frozen=True)
class Evaluated:
    """The evaluate step's result: the backtest on the test window and its regime slices."""

    result: BacktestResult
    regimes: RegimeEvaluation


class _Step:
    """A running step, and what its last transaction needs to record its end (hand_over)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.perf_counter()
        # Set by a hand-over: the step entered next, the instant steps between, and this step's
        # wall time as measured just before the write that recorded it.
        self.next_step = ""
        self.instant: tuple[str, ...] = ()
        self.seconds: float | None = None

    def hand_over(self, step: str, *, instant: tuple[str, ...] = ()) -> services.NextStep:
        """Let the service whose transaction ends this step record, in its own write of the job,
        that this step and the `instant` ones after it finished and the job enters `step`: one
        write fewer than a step_next after the commit."""
        self.next_step, self.instant = step, instant

        def finished() -> dict[str, float]:
            self.seconds = time.perf_counter() - self.started
            return {self.name: self.seconds, **dict.fromkeys(instant, 0.0)}

        return services.NextStep(
            step=step, progress=STEPS[instant[-1] if instant else self.name], finished=finished
        )


@contextmanager
def _step(run: Run, name: str) -> Iterator[_Step]:
    """Run one step: every line logged inside carries job_id, model_id and step; its wall time
    goes to the step-duration histogram once it finishes, and to the job with the next step's
    start (one write for both), or with the step's own last write (_Step.hand_over)."""
    job = run.job
    if run.entered == name:
        # The claim or the previous step's transaction recorded it; steps finished meanwhile
        # (start, after the claim) go with the next write.
        run.entered = None
    elif not run.finished:
        services.training_job_step_start(job_id=job.pk, step=name, attempt=run.attempt)
    else:
        services.training_job_step_next(
            job_id=job.pk, finished=run.finished, progress=STEPS[list(run.finished)[-1]],
            step=name, attempt=run.attempt,
        )  # fmt: skip
        run.finished = {}
    step = _Step(name)
    try:
        with log_context(job_id=job.pk, model_id=job.model.model_id, step=name):
            yield step
    except services.AttemptLost:
        raise
    except Exception as exc:
        raise _StepFailed(name, exc) from exc
    if step.seconds is None:  # no hand-over: recorded with the next write
        _finished(run, name, time.perf_counter() - step.started)
        for instant in step.instant:
            _instant_step(run, instant)
        return
    # The service committed the hand-over: the job already shows it in the next step.
    _observe(run, name, step.seconds)
    for instant in step.instant:
        _observe(run, instant, 0.0)
    run.entered = step.next_step


def _instant_step(run: Run, name: str) -> None:
    """A step with nothing of its own to wait for (a log line; an outbox event that an earlier
    step's transaction wrote): it is recorded in the write that starts the next step."""
    _finished(run, name, 0.0)


def _finished(run: Run, name: str, seconds: float) -> None:
    run.finished[name] = seconds
    _observe(run, name, seconds)


def _observe(run: Run, name: str, seconds: float) -> None:
    metrics.pipeline_step_observe(step=name, model_type=run.job.model_type, seconds=seconds)


class _StepFailed(Exception):
    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error


def run_job(*, job_id: str, redelivered: bool = False) -> str:
    """Run one job through the pipeline. Idempotent by job id: a second delivery does nothing.

    Returns the job's final status. A redelivery of a job left in progress by a dead worker
    reclaims it (another attempt) or fails it cleanly once CLM_TRAINING_MAX_ATTEMPTS is reached.
    """
    # The claim enters the first step that writes anything (start is a log line).
    claimed = first_claim = services.training_job_claim(
        job_id=job_id, step="fetch_data", progress=STEPS["start"]
    )
    if not claimed and redelivered:
        claimed = services.training_job_reclaim(
            job_id=job_id,
            max_attempts=settings.CLM_TRAINING_MAX_ATTEMPTS,
            heartbeat_timeout=settings.CLM_JOB_HEARTBEAT_TIMEOUT,
        )
    job = TrainingJob.objects.select_related("model").filter(pk=job_id).first()
    if job is None:
        logger.warning("job %s does not exist; message dropped", job_id, extra={"job_id": job_id})
        return "missing"
    log = logging.LoggerAdapter(logger, {"job_id": str(job.pk), "model_id": job.model.model_id})
    if not claimed:
        log.info("job %s is %s; nothing to do", job_id, job.status)
        return job.status
    run = Run(
        job=job,
        policy=evaluation_policy_for(
            job.model_type, auto_promote_default=settings.CLM_AUTO_PROMOTE
        ),
        attempt=job.attempts,
        entered="fetch_data" if first_claim else None,
    )
    beat = functools.partial(services.training_job_heartbeat, job_id=job.pk, attempt=run.attempt)
    with Heartbeat(name=f"job {job.pk}", beat=beat):
        return _run_steps(run, log)


def _run_steps(run: Run, log: logging.LoggerAdapter) -> str:
    job = run.job
    started = time.perf_counter()
    try:
        decision = _steps(run, log)
        services.training_job_complete(
            job_id=job.pk, version=run.version, model_seconds={**run.model_seconds, **run.finished},
            attempt=run.attempt,
        )  # fmt: skip
    except services.AttemptLost as lost:
        # The reaper gave the job to another attempt; anything written now would be theirs.
        log.warning("attempt %s stops: %s", run.attempt, lost)
        return "lost"
    except _StepFailed as failed:
        _fail(run, failed.step, failed.error)
        log.error(
            "job failed at %s: %s", failed.step, failed.error,
            exc_info=(type(failed.error), failed.error, failed.error.__traceback__),
        )  # fmt: skip
        _observe_job(run, JobStatus.FAILED, started)
        return JobStatus.FAILED
    except BaseException as exc:  # a soft time limit or shutdown outside a step
        _fail(run, run.job.step or "start", exc)
        log.error("job failed outside a step: %s", exc, exc_info=True)
        _observe_job(run, JobStatus.FAILED, started)
        raise
    log.info("job completed: %s", decision)
    _observe_job(run, JobStatus.COMPLETED, started)
    return JobStatus.COMPLETED


def _steps(run: Run, log: logging.LoggerAdapter) -> str:
    """The 10 steps in order, each passing its typed result on; returns the decision taken."""
    job, policy = run.job, run.policy
    with log_context(job_id=job.pk, model_id=job.model.model_id, step="start"):
        log.info("training %s (%s)", job.model.model_id, job.trigger_reason)
    _instant_step(run, "start")  # recorded as the job enters fetch_data
    with _step(run, "fetch_data"):
        bars = _fetch_data(job)
        # P of METRICS.md: the symbol's calendar, or bars per year measured over these bars.
        annualisation = series_annualisation(
            symbol=job.symbol, timeframe=job.timeframe, timestamps=bars.timestamp
        )
    with _step(run, "train"):
        trained = _train(job, policy, bars, annualisation, run.model_seconds)
    with _step(run, "register") as step:
        # model_trained goes to the outbox with the version (publish_trained has nothing of its
        # own), and the job enters evaluate in the same transaction.
        version = run.version = _register(
            job, bars, annualisation, trained, attempt=run.attempt,
            next_step=step.hand_over("evaluate", instant=("publish_trained",)),
        )  # fmt: skip
    with _step(run, "evaluate"):
        evaluated = _evaluate(job, policy, bars, annualisation, trained, run.model_seconds)
    with _step(run, "save_evaluation"):
        evaluation = _save_evaluation(job, policy, bars, trained.split, version, evaluated)
    _instant_step(run, "publish_evaluated")  # model_evaluated went out with the evaluation
    with _step(run, "apply_gates"):
        return _apply_gates(job, policy, bars, annualisation, trained.split, version, evaluation)


def _observe_job(run: Run, status: str, started: float) -> None:
    metrics.training_job_observe(
        model_type=run.job.model_type, status=status, seconds=time.perf_counter() - started
    )


def _fail(run: Run, step: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    if not isinstance(error, PipelineError):
        detail = f"{detail}\n\n{''.join(traceback.format_tb(error.__traceback__)[-3:])}"
    version = run.version
    # Read the status afresh: steps change it through services, not through `run.version`.
    current = (
        ModelVersion.objects.filter(pk=version.pk).values_list("status", flat=True).first()
        if version is not None
        else None
    )
    if version is not None and current == ModelStatus.TRAINING:
        try:
            services.model_version_set_status(
                model_id=run.job.model.model_id,
                version=version.version,
                status=ModelStatus.FAILED,
                actor="pipeline",
                reason=f"pipeline error at {step}",
            )
        except Exception:  # the job's own failure below must still be recorded
            logger.exception("could not mark %s failed", version)
    services.training_job_fail(
        job_id=run.job.pk, step=step, error=detail, version=version, attempt=run.attempt
    )


# ---------------------------------------------------------------------------------------------
# Steps


def _fetch_data(job: TrainingJob) -> Bars:
    window = (job.window_start, job.window_end) if job.window_start or job.window_end else None
    bars = get_data_loader()(job.symbol, job.timeframe, window)
    if len(bars) < MIN_BARS:
        raise PipelineError(
            f"{len(bars)} bars of {job.symbol} {job.timeframe} in the window; need {MIN_BARS}"
        )
    return bars


def _search_seen_until(job: TrainingJob) -> np.datetime64 | None:
    """The last bar the search that chose this job's candidate saw (evolution's selection puts it
    in the trigger context), or None for a job no search chose."""
    seen = (job.trigger_context or {}).get("search_seen_until")
    if not seen:
        return None
    try:
        return as_datetime64(datetime.fromisoformat(seen))
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"trigger context search_seen_until {seen!r} is not a time") from exc


def _train(
    job: TrainingJob,
    policy: EvaluationPolicy,
    bars: Bars,
    annualisation: Annualisation,
    model_seconds: dict[str, float],
) -> Trained:
    seen_until = _search_seen_until(job)
    try:
        dataset, split, params, feature_spec = prepare_training(
            bars,
            job.params,
            eval_fraction=policy.eval_fraction,
            validation_fraction=policy.validation_fraction,
            test_after=seen_until,
        )
        leaking = leaking_features(bars, dataset, feature_spec, split.train.stop)
        trainer = trainer_class(job.model_type)(params, seed=job.seed)
    except (ValueError, TypeError) as exc:
        raise PipelineError(str(exc)) from exc
    if leaking:
        # Such a model would get a score it could never earn live: fail before training.
        raise PipelineError(
            f"features leak the future (they change when later bars are removed): "
            f"{', '.join(leaking)}"
        )
    started = time.perf_counter()
    fit_metrics = trainer.fit(dataset, split.train, split.validation)
    model_seconds["train.fit"] = time.perf_counter() - started
    started = time.perf_counter()
    positions = trainer.positions(dataset, split.validation)
    model_seconds["train.predict"] = time.perf_counter() - started
    validation = backtest(
        bars.close[split.validation],
        positions,
        fee=policy.fee,
        periods_per_year=annualisation.periods_per_year,
    )
    fit_metrics.update(
        {f"validation_{name}": float(getattr(validation, name)) for name in VALIDATION_METRICS}
    )
    return Trained(
        dataset=dataset,
        split=split,
        trainer=trainer,
        metrics=fit_metrics,
        search_seen_until=seen_until,
    )


def _timestamp(bars: Bars, index: int) -> datetime:
    return as_datetime(bars.timestamp[index])


def _manifest(
    job: TrainingJob, bars: Bars, annualisation: Annualisation, trained: Trained, blob_sha: str
) -> dict[str, Any]:
    split = trained.split
    versions = dict(_library_versions())
    return {
        "data_sha256": bars.sha256,
        "symbol": job.symbol,
        "timeframe": job.timeframe,
        "bars": {
            "first": _timestamp(bars, 0).isoformat(),
            "last": _timestamp(bars, len(bars) - 1).isoformat(),
            "count": len(bars),
        },
        "split": split.as_dict(),
        "windows": _windows(bars, split),
        "search_seen_until": (
            None
            if trained.search_seen_until is None
            else as_datetime(trained.search_seen_until).isoformat()
        ),
        "annualisation": annualisation.as_dict(),
        "feature_spec": trained.dataset.spec,
        "params": trained.trainer.params,
        "seed": job.seed,
        "artifact_sha256": blob_sha,
        "python": platform.python_version(),
        "libraries": versions,
    }


@functools.cache
def _library_versions() -> dict[str, str]:
    """The installed versions of LIBRARIES, read once per process: what a running worker has
    imported does not change under it, and reading package metadata costs milliseconds."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _windows(bars: Bars, split: Split) -> dict[str, dict[str, Any]]:
    """Every window of the split with its rows [start, stop) and its first and last bar's time:
    what the version was fitted on (train), selected on (validation) and evaluated on (test)."""
    windows = {}
    for name, window in split.windows():
        windows["test" if name == "evaluate" else name] = {
            "rows": [window.start, window.stop],
            "first": _timestamp(bars, window.start).isoformat(),
            "last": _timestamp(bars, window.stop - 1).isoformat(),
        }
    return windows


def _register(
    job: TrainingJob,
    bars: Bars,
    annualisation: Annualisation,
    trained: Trained,
    *,
    attempt: int,
    next_step: services.NextStep | None = None,
) -> ModelVersion:
    stored = artifact_save(model_id=job.model.model_id, blob=trained.trainer.dumps())
    split = trained.split
    return services.model_version_register(
        model=job.model,
        job=job,
        params=trained.trainer.params,
        feature_spec=trained.dataset.spec,
        training_metrics=trained.metrics,
        manifest=_manifest(job, bars, annualisation, trained, stored.sha256),
        artifact_path=stored.path,
        artifact_sha256=stored.sha256,
        artifact_size=stored.size,
        train_start=_timestamp(bars, split.train.start),
        train_end=_timestamp(bars, split.train.stop - 1),
        job_attempt=attempt,
        next_step=next_step,
    )


def _trial_sharpes(job: TrainingJob) -> list[float]:
    """Per-bar Sharpe ratios of the DSR's earlier trials: every evaluation of this model line and
    every other trial source's (settings.CLM_TRIAL_SOURCES) on the same symbol and timeframe; the
    candidate this job trains, if any, is the trial this evaluation repeats, so it is left out."""
    return registry_selectors.trial_sharpes(
        model_id=job.model.model_id,
        symbol=job.symbol,
        timeframe=job.timeframe,
        exclude=(job.trigger_context or {}).get("candidate_id"),
    )


def _evaluate(
    job: TrainingJob,
    policy: EvaluationPolicy,
    bars: Bars,
    annualisation: Annualisation,
    trained: Trained,
    model_seconds: dict[str, float],
) -> Evaluated:
    window = trained.split.evaluate
    started = time.perf_counter()
    positions = trained.trainer.positions(trained.dataset, window)
    model_seconds["evaluate.predict"] = time.perf_counter() - started
    periods = annualisation.periods_per_year
    result = backtest(bars.close[window], positions, fee=policy.fee, periods_per_year=periods)
    # Deflate by every evaluation of this model line so far, this one included (METRICS.md: K).
    trials = [*_trial_sharpes(job), result.sharpe / np.sqrt(periods)]
    if len(trials) > 1:
        dsr = deflated_sharpe(
            result.returns[1:],
            n_trials=len(trials),
            trial_sharpe_variance=float(np.var(trials, ddof=1)),
        )
        result = dataclasses.replace(result, n_trials=len(trials), dsr=dsr)
    regimes = evaluate_by_regime(
        close=bars.close, window=window, positions=positions, fee=policy.fee,
        periods_per_year=periods, labels=_regime_labels(bars, window),
    )  # fmt: skip
    return Evaluated(result=result, regimes=regimes)


# (the bars' sha256, window) -> the window's regime labels, per worker process: they depend on the
# bars alone, and jobs on the same bars evaluate on the same test window.
_REGIME_LABELS: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
_REGIME_LABELS_KEPT = 16


def _regime_labels(bars: Bars, window: slice) -> np.ndarray:
    key = (bars.sha256, window.start, window.stop)
    held = _REGIME_LABELS.get(key)
    if held is None:
        held = _REGIME_LABELS[key] = window_regime_labels(bars.close, window)
        held.flags.writeable = False
        while len(_REGIME_LABELS) > _REGIME_LABELS_KEPT:
            _REGIME_LABELS.popitem(last=False)
    _REGIME_LABELS.move_to_end(key)
    return held


def _save_evaluation(
    job: TrainingJob,
    policy: EvaluationPolicy,
    bars: Bars,
    split: Split,
    version: ModelVersion,
    evaluated: Evaluated,
) -> EvaluationResult:
    window, result, regimes = split.evaluate, evaluated.result, evaluated.regimes
    metrics = result.as_dict()
    gates, passed = apply_gates(metrics, policy.gates, regime_slices=regimes.slices)
    buy_hold = backtest(
        bars.close[window],
        np.ones(window.stop - window.start),
        fee=0.0,
        periods_per_year=result.periods_per_year,
    )
    model_id = job.model.model_id
    # The points of the picture, not the picture: drawing it costs more than the rest of the
    # job's bookkeeping, so it is drawn when first asked for (equity_curve_png_ensure).
    points = equity_curve_points(
        timestamps=bars.timestamp[window],
        equity=result.equity,
        buy_hold=buy_hold.equity,
        regimes=regimes.labels,
    )
    title = (
        f"{model_id} v{version.version}: Sharpe {result.sharpe:.2f}, "
        f"max drawdown {result.max_drawdown:.1%} (buy and hold Sharpe {buy_hold.sharpe:.2f})"
    )
    stored = artifact_save(
        model_id=f"{model_id}/plots", blob=equity_series_npz(points=points, title=title),
        suffix=".npz",
    )  # fmt: skip
    return services.evaluation_record(
        version=version,
        metrics=metrics,
        window_start=_timestamp(bars, window.start),
        window_end=_timestamp(bars, window.stop - 1),
        n_bars=window.stop - window.start,
        fee=result.fee,
        periods_per_year=int(result.periods_per_year),
        n_trials=result.n_trials,
        gates=gates,
        passed=passed,
        benchmark_sharpe=buy_hold.sharpe,
        equity_series=stored.path,
        regime_slices=regimes.slices,
    )


@dataclass(frozen=True)
class Incumbent:
    """The production version's Sharpe ratio on this job's validation and test windows."""

    validation_sharpe: float
    test_sharpe: float


# A model line's production version, with what scoring it needs, not its manifest and metrics
# (large JSON): read by every gate-passing job, compiled once per process (clm_project.compiled).
_PRODUCTION = CompiledQuery(
    lambda model_pk: ModelVersion.objects.filter(
        model_id=model_pk, status=ModelStatus.PRODUCTION
    ).only("pk", "artifact_path", "artifact_sha256", "feature_spec"),
    model_pk=int,
)

# (production version, its artifact, the bars' sha256, windows, fee, P) -> its Sharpe ratios; per
# worker process. Jobs of one model on the same bars (evolution's candidates, repeated retraining
# before new bars arrive) score the same incumbent on the same windows: once is enough.
_PRODUCTION_SHARPES: OrderedDict[tuple[Any, ...], Incumbent] = OrderedDict()
_PRODUCTION_SHARPES_KEPT = 256


def production_sharpe_on(
    job: TrainingJob,
    policy: EvaluationPolicy,
    bars: Bars,
    periods_per_year: float,
    split: Split,
    *,
    data_sha256: str = "",
) -> Incumbent | None:
    """The current production version's Sharpe on this job's validation and test windows, or
    None when the model has no production version.

    With `data_sha256` (of the bars, as in the manifest) the scores are kept for later jobs on
    the same bars and windows."""
    production = _PRODUCTION.first(model_pk=job.model_id)  # at most one (a constraint)
    if production is None:
        return None
    key = _incumbent_key(production, data_sha256, split, policy.fee, periods_per_year)
    if data_sha256 and key in _PRODUCTION_SHARPES:
        _PRODUCTION_SHARPES.move_to_end(key)
        return _PRODUCTION_SHARPES[key]
    incumbent = _production_sharpe(production, job, policy, bars, periods_per_year, split)
    if data_sha256:
        _PRODUCTION_SHARPES[key] = incumbent
        while len(_PRODUCTION_SHARPES) > _PRODUCTION_SHARPES_KEPT:
            _PRODUCTION_SHARPES.popitem(last=False)
    return incumbent


def _incumbent_key(
    version: ModelVersion, data_sha256: str, split: Split, fee: float, periods_per_year: float
) -> tuple[Any, ...]:
    return (
        version.pk, version.artifact_sha256, data_sha256, split.validation.start,
        split.validation.stop, split.evaluate.start, split.evaluate.stop, fee, periods_per_year,
    )  # fmt: skip


def _remember_scores(
    version: ModelVersion,
    policy: EvaluationPolicy,
    bars: Bars,
    periods_per_year: float,
    split: Split,
    validation_sharpe: float,
    test_sharpe: float,
) -> None:
    """Keep this job's own Sharpe ratios on its windows as its version's, should it become the
    production version that the next job on the same bars and windows is compared with: its
    artifact reloads to the same positions (a tested property of every family), so scoring it
    again would give the same numbers."""
    key = _incumbent_key(version, bars.sha256, split, policy.fee, periods_per_year)
    _PRODUCTION_SHARPES[key] = Incumbent(
        validation_sharpe=validation_sharpe, test_sharpe=test_sharpe
    )
    while len(_PRODUCTION_SHARPES) > _PRODUCTION_SHARPES_KEPT:
        _PRODUCTION_SHARPES.popitem(last=False)


def _production_sharpe(
    production: ModelVersion,
    job: TrainingJob,
    policy: EvaluationPolicy,
    bars: Bars,
    periods_per_year: float,
    split: Split,
) -> Incumbent:
    blob = artifact_load(path=production.artifact_path, sha256=production.artifact_sha256)
    trainer = trainer_class(job.model_type).loads(blob)
    spec = production.feature_spec or None
    # The job's own dataset when production was trained on the same features (dataset_for).
    dataset = dataset_for(bars, spec, horizon=(spec or {}).get("horizon"))
    sharpes = [
        backtest(
            bars.close[window],
            trainer.positions(dataset, window),
            fee=policy.fee,
            periods_per_year=periods_per_year,
        ).sharpe
        for window in (split.validation, split.evaluate)
    ]
    return Incumbent(validation_sharpe=sharpes[0], test_sharpe=sharpes[1])


def _apply_gates(
    job: TrainingJob,
    policy: EvaluationPolicy,
    bars: Bars,
    annualisation: Annualisation,
    split: Split,
    version: ModelVersion,
    evaluation: EvaluationResult,
) -> str:
    """Step 9: the promotion decision (training.promotion.decision) on the evaluation; returns
    what was decided, for the job's log line."""
    model_id, number = job.model.model_id, version.version
    _remember_scores(
        version, policy, bars, annualisation.periods_per_year, split,
        validation_sharpe=float(version.training_metrics["validation_sharpe"]),
        test_sharpe=evaluation.sharpe,
    )  # fmt: skip
    failing = [name for name, gate in evaluation.gates.items() if not gate["passed"]]
    if failing:
        ModelVersion.objects.filter(pk=version.pk).update(failed_gates=failing)
        enact(decide(basis="", better=False, auto_promote=False, failing_gates=failing),
              model_id=model_id, version=number, actor="pipeline")  # fmt: skip
        return f"v{number} failed gates {failing}"
    try:
        incumbent = production_sharpe_on(
            job, policy, bars, annualisation.periods_per_year, split,
            data_sha256=(version.manifest or {}).get("data_sha256", ""),
        )  # fmt: skip
    except Exception as exc:  # an unreadable production artifact must not block a good version
        logger.warning("could not score production of %s: %s", model_id, exc)
        incumbent = None
    against = (
        "no production version"
        if incumbent is None
        else f"production Sharpe {incumbent.test_sharpe:.3f}"
    )
    if incumbent is not None:
        # "Clearly better" chooses between two paths: a selection, made on the validation window.
        why = shadow_wanted(
            shadow_policy_for(job.model_type),
            sharpe=float(version.training_metrics["validation_sharpe"]),
            production_sharpe=incumbent.validation_sharpe,
        )
        shadowing = why is not None and _enter_shadow(model_id, number, why)
        if shadowing:
            return shadowing
    decision = decide(
        basis="passed gates",
        better=incumbent is None or evaluation.sharpe > incumbent.test_sharpe,
        auto_promote=policy.auto_promote,
        against=against,
        evidence=f"Sharpe {evaluation.sharpe:.3f} vs {against}",
    )
    enact(decision, model_id=model_id, version=number, actor="pipeline", from_training=True)
    if decision.outcome == Outcome.PROMOTE:
        return f"v{number} promoted"
    return f"v{number} candidate ({decision.reason.removeprefix('passed gates; ')})"


def _enter_shadow(model_id: str, number: int, why: str) -> str:
    """A gate-passing version the shadow policy wants proven against production shadows it
    (training.promotion.shadow); returns what was decided, or "" when it could not start
    shadowing (production gone meanwhile) and falls back to promote-or-candidate."""
    decision = decide(basis="passed gates", better=True, auto_promote=False, shadow_reason=why)
    try:
        comparison = shadow_start(
            model_id=model_id, version=number, actor="pipeline", reason=decision.reason,
            from_training=True,
        )  # fmt: skip
    except DomainError as exc:
        logger.warning("v%s of %s could not enter shadow: %s", number, model_id, exc.message)
        return ""
    return f"v{number} shadow ({why}; comparison {comparison.pk})"
