"""Celery wrappers of the shadow, experiment and rollback steps, run by celery-beat (see
training.retraining.scheduler.SCHEDULES). Each delegates to a plain function a test can call
directly; the steps are idempotent (a compare-and-set on each comparison's or experiment's bar
count, the model row lock for rollbacks)."""

from __future__ import annotations

from celery import shared_task

from training.promotion import experiments, rollback, shadow


@shared_task(name="training.shadow_evaluate")
def shadow_evaluate() -> dict[str, int]:
    return shadow.shadow_evaluate_all()


@shared_task(name="training.experiments_evaluate")
def experiments_evaluate() -> dict[str, int]:
    return experiments.experiments_evaluate_all()


@shared_task(name="training.rollback_check")
def rollback_check() -> dict[str, int]:
    return rollback.rollback_check_all()
