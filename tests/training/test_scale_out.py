"""Workers on several machines: real `celery worker` processes, each with local directories of its
own, sharing one PostgreSQL, one broker (each test runs on both) and one S3-protocol store
(moto's server on loopback)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from registry import services
from registry.models import JobStatus, ModelVersion, TrainingJob
from tests.s3 import CuttingRelay, S3Bucket
from tests.seams import HOLD_TRAINER
from training.promotion.models import PromotionPolicy

from .conftest import store_bars

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def machine(root: Path, bucket: S3Bucket, **extra: str) -> dict[str, str]:
    """The environment of a worker on a machine of its own: its own disk under `root`, the
    shared bucket, the test trainer."""
    return {
        **bucket.env(),
        "ARTIFACT_ROOT": str(root / "artifacts"),
        "CLM_ARTIFACT_CACHE_DIR": str(root / "artifact-cache"),
        "CLM_EXTRA_TRAINERS": HOLD_TRAINER,
        "CLM_EVENTS_CONSUME": "false",
        **extra,
    }


def permissive_gates() -> None:
    PromotionPolicy.objects.create(
        model_type="other", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=0,
    )  # fmt: skip


def job_send(symbol: str, **params) -> TrainingJob:
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type="other", symbol=symbol, timeframe="1h", params=params
        )
    )
    return job


def finished(job: TrainingJob, timeout: float = 180) -> TrainingJob:
    def done() -> TrainingJob | None:
        found = TrainingJob.objects.select_related("version").get(pk=job.pk)
        return found if found.status in TERMINAL else None

    return wait_for(f"job {job.pk} finished", done, timeout)  # type: ignore[return-value]


def test_the_store_going_away_mid_upload_fails_the_job_with_nothing_registered(
    start_worker, s3_server, s3_bucket, tmp_path
):
    permissive_gates()
    store_bars("CUTUSD", 2_000, seed=3)
    relay = CuttingRelay(s3_server.port, cut_after=256 * 1024)
    env = machine(tmp_path, s3_bucket, **s3_bucket.env(endpoint=relay.endpoint))
    start_worker(env=env)

    job = finished(job_send("CUTUSD", pad_bytes=1024 * 1024))

    assert relay.cut.is_set()  # the store went away during the artifact's upload
    assert job.status == JobStatus.FAILED
    assert "could not be stored" in job.error_message, job.error_message
    assert not ModelVersion.objects.filter(model=job.model).exists()
    assert s3_bucket.keys() == []
    assert not (tmp_path / "artifacts").exists()  # nothing fell back to the local disk
