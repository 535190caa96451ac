"""Celery wrappers of the shadow, experiment and rollback passes, run by celery-beat (see
training.retraining.scheduler.SCHEDULES) on the `lifecycle` queue.

Each pass fans out: the beat task lists what is due and sends one task per comparison,
experiment or model, so that workers on every machine share a pass over many models and one slow
model never holds up the rest. Each task delegates to a plain function a test can call directly;
the steps are idempotent (a compare-and-set on each comparison's or experiment's bar count, the
model row lock for rollbacks), so a step sent twice by two overlapping passes does its work once.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from clm_project.celery import fan_out
from clm_project.metrics import lifecycle_outcomes_count
from training.promotion import experiments, rollback, shadow

logger = logging.getLogger(__name__)

SOFT, HARD = settings.CLM_LIFECYCLE_TIME_LIMITS


def _counted(lifecycle_pass: str, outcome: str, item: object) -> str:
    lifecycle_outcomes_count(lifecycle_pass, {outcome: 1})
    if outcome not in {"unchanged", "ok"}:
        logger.info("%s step of %s: %s", lifecycle_pass, item, outcome)
    return outcome


@shared_task(name="training.shadow_evaluate", soft_time_limit=SOFT, time_limit=HARD)
def shadow_evaluate() -> dict[str, int]:
    started = dict(shadow.shadow_orphans_start())
    lifecycle_outcomes_count("shadow", started)
    sent = fan_out("training.shadow_step", shadow.shadow_active_ids())
    logger.info("shadow pass: %s comparison steps sent, %s", sent, started or "none started")
    return {**started, "sent": sent}


@shared_task(name="training.shadow_step", soft_time_limit=SOFT, time_limit=HARD)
def shadow_step(comparison_id: int) -> str:
    return _counted("shadow", shadow.shadow_step(comparison_id=comparison_id), comparison_id)


@shared_task(name="training.experiments_evaluate", soft_time_limit=SOFT, time_limit=HARD)
def experiments_evaluate() -> dict[str, int]:
    sent = fan_out("training.experiment_step", experiments.experiments_running_ids())
    logger.info("experiment pass: %s experiment steps sent", sent)
    return {"sent": sent}


@shared_task(name="training.experiment_step", soft_time_limit=SOFT, time_limit=HARD)
def experiment_step(experiment_id: int) -> str:
    outcome = experiments.experiment_step(experiment_id=experiment_id)
    return _counted("experiment", outcome, experiment_id)


@shared_task(name="training.rollback_check", soft_time_limit=SOFT, time_limit=HARD)
def rollback_check() -> dict[str, int]:
    sent = fan_out("training.rollback_step", rollback.rollback_model_ids())
    logger.info("rollback pass: %s production models sent for a check", sent)
    return {"sent": sent}


@shared_task(name="training.rollback_step", soft_time_limit=SOFT, time_limit=HARD)
def rollback_step(model_id: str) -> str:
    return _counted("rollback", rollback.rollback_step(model_id=model_id), model_id)
