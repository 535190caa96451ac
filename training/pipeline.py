"""The 10-step training pipeline of the original design, for one job.

Each step is a short transaction (or none): training runs outside any transaction, so a long fit
never holds a lock. Progress and per-step wall time are written to the job as steps finish; any
error is stored on the job with the step it happened in, and a version registered before the error
is marked failed rather than left in `training`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection

from clm_project import metrics
from clm_project.exceptions import DomainError
from clm_project.logging import log_context
from registry import selectors as registry_selectors
from registry import services
from registry.artifacts import artifact_load, artifact_save
from registry.models import EvaluationResult, JobStatus, ModelStatus, ModelVersion, TrainingJob
from training.data.bars import as_datetime, get_data_loader
from training.data.calendars import Annualisation
from training.data.dataset import Bars, Dataset
from training.data.features import build_dataset
from training.data.prepare import MIN_BARS, leaking_features, prepare_training
from training.data.selectors import series_annualisation
from training.data.split import Split
from training.evaluation.backtest import BacktestResult, backtest, deflated_sharpe
from training.evaluation.plots import equity_curve_png
from training.evaluation.regime_slices import RegimeEvaluation, evaluate_by_regime
from training.promotion.gates import apply_gates
from training.promotion.policies import EvaluationPolicy, evaluation_policy_for
from training.promotion.shadow import shadow_policy_for, shadow_start, shadow_wanted
from training.trainers import Trainer, trainer_class

logger = logging.getLogger(__name__)

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
    job: TrainingJob
    policy: EvaluationPolicy
    attempt: int = 0
    bars: Bars | None = None
    dataset: Dataset | None = None
    split: Split | None = None
    trainer: Trainer | None = None
    training_metrics: dict[str, Any] = field(default_factory=dict)
    version: ModelVersion | None = None
    regimes: RegimeEvaluation | None = None
    result: BacktestResult | None = None
    annualisation: Annualisation | None = None
    evaluation: EvaluationResult | None = None
    decision: str = ""
    # Wall time of the model's own work inside the train and evaluate steps.
    model_seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def _step(run: Run, name: str) -> Iterator[None]:
    """Run one step: every line logged inside carries job_id, model_id and step; its wall time
    goes to the job and to the step-duration histogram once it finishes."""
    job = run.job
    services.training_job_step_start(job_id=job.pk, step=name, attempt=run.attempt)
    started = time.perf_counter()
    try:
        with log_context(job_id=job.pk, model_id=job.model.model_id, step=name):
            yield
    except services.AttemptLost:
        raise
    except Exception as exc:
        raise _StepFailed(name, exc) from exc
    seconds = time.perf_counter() - started
    services.training_job_progress(
        job_id=job.pk, step=name, progress=STEPS[name], seconds=seconds, attempt=run.attempt
    )
    metrics.pipeline_step_observe(step=name, model_type=job.model_type, seconds=seconds)


class _StepFailed(Exception):
    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error


class JobHeartbeat(threading.Thread):
    """Refreshes the job's heartbeat every CLM_JOB_HEARTBEAT_INTERVAL seconds while it runs.

    A thread of the process that trains, so it beats through a long fit in any library (they
    release the GIL in their native loops) and stops when that process dies: the reaper then
    sees the heartbeat go stale and takes the job back.
    """

    def __init__(self, *, job_id: Any, attempt: int) -> None:
        super().__init__(name=f"clm-heartbeat-{job_id}", daemon=True)
        self.job_id = job_id
        self.attempt = attempt
        self.stopped = threading.Event()

    def __enter__(self) -> JobHeartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=5)

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.CLM_JOB_HEARTBEAT_INTERVAL):
                try:
                    held = services.training_job_heartbeat(job_id=self.job_id, attempt=self.attempt)
                except Exception as exc:  # the database may come back before the timeout
                    logger.warning("heartbeat of job %s failed: %s", self.job_id, exc)
                    close_old_connections()
                    continue
                if not held:
                    return
        finally:
            connection.close()


def run_job(*, job_id: str, redelivered: bool = False) -> str:
    """Run one job through the pipeline. Idempotent by job id: a second delivery does nothing.

    Returns the job's final status. A redelivery of a job left in progress by a dead worker
    reclaims it (another attempt) or fails it cleanly once CLM_TRAINING_MAX_ATTEMPTS is reached.
    """
    claimed = services.training_job_claim(job_id=job_id)
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
    )
    with JobHeartbeat(job_id=job.pk, attempt=run.attempt):
        return _run_steps(run, log)


def _run_steps(run: Run, log: logging.LoggerAdapter) -> str:
    job = run.job
    started = time.perf_counter()
    try:
        with _step(run, "start"):
            log.info("training %s (%s)", job.model.model_id, job.trigger_reason)
        with _step(run, "fetch_data"):
            _fetch_data(run)
        with _step(run, "train"):
            _train(run)
        with _step(run, "register"):
            _register(run)
        with _step(run, "publish_trained"):
            pass  # model_trained was written to the outbox in register's transaction
        with _step(run, "evaluate"):
            _evaluate(run)
        with _step(run, "save_evaluation"):
            _save_evaluation(run)
        with _step(run, "publish_evaluated"):
            pass  # model_evaluated was written to the outbox with the evaluation
        with _step(run, "apply_gates"):
            _apply_gates(run)
        services.training_job_complete(
            job_id=job.pk, version=run.version, model_seconds=run.model_seconds,
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
    log.info("job completed: %s", run.decision)
    _observe_job(run, JobStatus.COMPLETED, started)
    return JobStatus.COMPLETED


def _observe_job(run: Run, status: str, started: float) -> None:
    metrics.training_job_observe(
        model_type=run.job.model_type, status=status, seconds=time.perf_counter() - started
    )


def _fail(run: Run, step: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    if not isinstance(error, PipelineError):
        detail = f"{detail}\n\n{''.join(traceback.format_tb(error.__traceback__)[-3:])}"
    # Read the status afresh: steps change it through services, not through `run.version`.
    current = (
        ModelVersion.objects.filter(pk=run.version.pk).values_list("status", flat=True).first()
        if run.version is not None
        else None
    )
    if current == ModelStatus.TRAINING:
        try:
            services.model_version_set_status(
                model_id=run.job.model.model_id,
                version=run.version.version,
                status=ModelStatus.FAILED,
                actor="pipeline",
                reason=f"pipeline error at {step}",
            )
        except Exception:  # the job's own failure below must still be recorded
            logger.exception("could not mark %s failed", run.version)
    services.training_job_fail(
        job_id=run.job.pk, step=step, error=detail, version=run.version, attempt=run.attempt
    )


# ---------------------------------------------------------------------------------------------
# Steps


def _fetch_data(run: Run) -> None:
    job = run.job
    window = (job.window_start, job.window_end) if job.window_start or job.window_end else None
    bars = get_data_loader()(job.symbol, job.timeframe, window)
    if len(bars) < MIN_BARS:
        raise PipelineError(
            f"{len(bars)} bars of {job.symbol} {job.timeframe} in the window; need {MIN_BARS}"
        )
    run.bars = bars
    # P of METRICS.md: the symbol's calendar, or bars per year measured over these bars.
    run.annualisation = series_annualisation(
        symbol=job.symbol, timeframe=job.timeframe, timestamps=bars.timestamp
    )


def _train(run: Run) -> None:
    try:
        run.dataset, run.split, params, feature_spec = prepare_training(
            run.bars, run.job.params, eval_fraction=run.policy.eval_fraction
        )
        leaking = leaking_features(run.bars, run.dataset, feature_spec, run.split.train.stop)
        trainer_cls = trainer_class(run.job.model_type)
        run.trainer = trainer_cls(params, seed=run.job.seed)
    except (ValueError, TypeError) as exc:
        raise PipelineError(str(exc)) from exc
    if leaking:
        # Such a model would get a score it could never earn live: fail before training.
        raise PipelineError(
            f"features leak the future (they change when later bars are removed): "
            f"{', '.join(leaking)}"
        )
    started = time.perf_counter()
    run.training_metrics = run.trainer.fit(run.dataset, run.split.train)
    run.model_seconds["train.fit"] = time.perf_counter() - started


def _timestamp(bars: Bars, index: int) -> datetime:
    return as_datetime(bars.timestamp[index])


def _manifest(run: Run, blob_sha: str) -> dict[str, Any]:
    bars, split = run.bars, run.split
    digest = hashlib.sha256()
    for array in (bars.timestamp.astype("int64"), bars.open, bars.high, bars.low, bars.close,
                  bars.volume):  # fmt: skip
        digest.update(np.ascontiguousarray(array).tobytes())
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "data_sha256": digest.hexdigest(),
        "symbol": run.job.symbol,
        "timeframe": run.job.timeframe,
        "bars": {
            "first": _timestamp(bars, 0).isoformat(),
            "last": _timestamp(bars, len(bars) - 1).isoformat(),
            "count": len(bars),
        },
        "split": {
            "train": [split.train.start, split.train.stop],
            "purge": [split.purge.start, split.purge.stop],
            "evaluate": [split.evaluate.start, split.evaluate.stop],
        },
        "annualisation": run.annualisation.as_dict(),
        "feature_spec": run.dataset.spec,
        "params": run.trainer.params,
        "seed": run.job.seed,
        "artifact_sha256": blob_sha,
        "python": platform.python_version(),
        "libraries": versions,
    }


def _register(run: Run) -> None:
    blob = run.trainer.dumps()
    stored = artifact_save(model_id=run.job.model.model_id, blob=blob)
    split, bars = run.split, run.bars
    run.version = services.model_version_register(
        model=run.job.model,
        job=run.job,
        params=run.trainer.params,
        feature_spec=run.dataset.spec,
        training_metrics=run.training_metrics,
        manifest=_manifest(run, stored.sha256),
        artifact_path=stored.path,
        artifact_sha256=stored.sha256,
        artifact_size=stored.size,
        train_start=_timestamp(bars, split.train.start),
        train_end=_timestamp(bars, split.train.stop - 1),
        job_attempt=run.attempt,
    )


def _trial_sharpes(run: Run) -> list[float]:
    """Per-bar Sharpe ratios of the DSR's earlier trials: every evaluation of this model line and
    every strategy candidate evaluated on the same symbol and timeframe (the candidate this job
    trains, if any, is the trial this evaluation repeats, so it is left out)."""
    return registry_selectors.trial_sharpes(
        model_id=run.job.model.model_id,
        symbol=run.job.symbol,
        timeframe=run.job.timeframe,
        exclude=(run.job.trigger_context or {}).get("candidate_id"),
    )


def _evaluate(run: Run) -> None:
    window = run.split.evaluate
    started = time.perf_counter()
    positions = run.trainer.positions(run.dataset, window)
    run.model_seconds["evaluate.predict"] = time.perf_counter() - started
    periods = run.annualisation.periods_per_year
    result = backtest(
        run.bars.close[window], positions, fee=run.policy.fee, periods_per_year=periods
    )
    # Deflate by every evaluation of this model line so far, this one included (METRICS.md: K).
    trials = [*_trial_sharpes(run), result.sharpe / np.sqrt(periods)]
    if len(trials) > 1:
        dsr = deflated_sharpe(
            result.returns[1:],
            n_trials=len(trials),
            trial_sharpe_variance=float(np.var(trials, ddof=1)),
        )
        result = dataclasses.replace(result, n_trials=len(trials), dsr=dsr)
    run.result = result
    run.regimes = evaluate_by_regime(
        close=run.bars.close, window=window, positions=positions, fee=run.policy.fee,
        periods_per_year=periods,
    )  # fmt: skip


def _save_evaluation(run: Run) -> None:
    window, bars, result = run.split.evaluate, run.bars, run.result
    metrics = result.as_dict()
    gates, passed = apply_gates(metrics, run.policy.gates, regime_slices=run.regimes.slices)
    buy_hold = backtest(
        bars.close[window],
        np.ones(window.stop - window.start),
        fee=0.0,
        periods_per_year=result.periods_per_year,
    )
    picture = equity_curve_png(
        timestamps=bars.timestamp[window],
        equity=result.equity,
        buy_hold=buy_hold.equity,
        regimes=run.regimes.labels,
        title=f"{run.job.model.model_id} v{run.version.version}: Sharpe {result.sharpe:.2f}, "
        f"max drawdown {result.max_drawdown:.1%} (buy and hold Sharpe {buy_hold.sharpe:.2f})",
    )
    stored = artifact_save(model_id=f"{run.job.model.model_id}/plots", blob=picture, suffix=".png")
    run.evaluation = services.evaluation_record(
        version=run.version,
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
        equity_curve=stored.path,
        regime_slices=run.regimes.slices,
    )


def production_sharpe_on(run: Run) -> float | None:
    """The current production version's Sharpe on this run's evaluation window, or None."""
    production = ModelVersion.objects.filter(
        model=run.job.model, status=ModelStatus.PRODUCTION
    ).first()
    if production is None:
        return None
    blob = artifact_load(path=production.artifact_path, sha256=production.artifact_sha256)
    trainer = trainer_class(run.job.model_type).loads(blob)
    spec = production.feature_spec or None
    dataset = build_dataset(run.bars, spec, horizon=(spec or {}).get("horizon"))
    positions = trainer.positions(dataset, run.split.evaluate)
    return backtest(
        run.bars.close[run.split.evaluate],
        positions,
        fee=run.policy.fee,
        periods_per_year=run.result.periods_per_year,
    ).sharpe


def _apply_gates(run: Run) -> None:
    model_id, number = run.job.model.model_id, run.version.version
    evaluation = run.evaluation
    if not evaluation.passed:
        failing = [name for name, gate in evaluation.gates.items() if not gate["passed"]]
        ModelVersion.objects.filter(pk=run.version.pk).update(failed_gates=failing)
        services.model_version_set_status(
            model_id=model_id, version=number, status=ModelStatus.FAILED, actor="pipeline",
            reason=f"failed gates: {', '.join(failing)}",
        )  # fmt: skip
        run.decision = f"v{number} failed gates {failing}"
        return
    try:
        incumbent = production_sharpe_on(run)
    except Exception as exc:  # an unreadable production artifact must not block a good version
        logger.warning("could not score production of %s: %s", model_id, exc)
        incumbent = None
    if incumbent is not None and _enter_shadow(run, incumbent):
        return
    beats = incumbent is None or evaluation.sharpe > incumbent
    against = "no production version" if incumbent is None else f"production Sharpe {incumbent:.3f}"
    if beats and run.policy.auto_promote:
        services.model_version_set_status(
            model_id=model_id, version=number, status=ModelStatus.CANDIDATE, actor="pipeline",
            reason="passed gates",
        )  # fmt: skip
        services.model_version_promote(
            model_id=model_id, version=number, actor="pipeline",
            reason=f"passed gates; Sharpe {evaluation.sharpe:.3f} vs {against}",
        )  # fmt: skip
        run.decision = f"v{number} promoted"
    else:
        why = "auto-promotion is off" if beats else f"does not beat {against}"
        services.model_version_set_status(
            model_id=model_id, version=number, status=ModelStatus.CANDIDATE, actor="pipeline",
            reason=f"passed gates; {why}",
        )  # fmt: skip
        run.decision = f"v{number} candidate ({why})"


def _enter_shadow(run: Run, production_sharpe: float) -> bool:
    """Per the model type's shadow policy, a gate-passing version that has not proven itself
    against production shadows it (training.promotion.shadow); True when it did. A version that
    cannot start shadowing (production gone meanwhile) falls back to promote-or-candidate."""

    why = shadow_wanted(
        shadow_policy_for(run.job.model_type),
        sharpe=run.evaluation.sharpe,
        production_sharpe=production_sharpe,
    )
    if why is None:
        return False
    model_id, number = run.job.model.model_id, run.version.version
    try:
        comparison = shadow_start(
            model_id=model_id, version=number, actor="pipeline", reason=f"passed gates; {why}",
            from_training=True,
        )  # fmt: skip
    except DomainError as exc:
        logger.warning("v%s of %s could not enter shadow: %s", number, model_id, exc.message)
        return False
    run.decision = f"v{number} shadow ({why}; comparison {comparison.pk})"
    return True
