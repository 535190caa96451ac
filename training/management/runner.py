"""Run a training job in-process through Celery's eager path, showing its progress."""

from __future__ import annotations

import threading

from django.db import connection

from registry.models import TrainingJob
from training.management.progress import Progress


def run_job_with_progress(job: TrainingJob, *, label: str | None = None) -> TrainingJob:
    """Execute `job` with `run_training_job.apply` in a thread while the caller draws progress."""
    from training.tasks import run_training_job

    error: list[BaseException] = []

    def work() -> None:
        try:
            run_training_job.apply(args=[str(job.pk)], task_id=job.celery_task_id or None)
        except BaseException as exc:  # surfaced to the caller below
            error.append(exc)
        finally:
            connection.close()

    progress = Progress(label or job.model.model_id)
    thread = threading.Thread(target=work, name=f"job-{job.pk}")
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
        row = TrainingJob.objects.filter(pk=job.pk).values("progress", "step").first()
        if row:
            progress.update(row["progress"], row["step"])
    if error:
        raise error[0]
    job.refresh_from_db()
    progress.done(job.status if job.status != "failed" else f"failed at {job.error_step}")
    return job
