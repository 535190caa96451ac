"""Thin Celery wrappers over the pipeline."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.run_training_job", bind=True)
def run_training_job(self, job_id: str) -> str:
    from training.pipeline import run_job

    return run_job(job_id=job_id)
