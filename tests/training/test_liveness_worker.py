"""Liveness with real processes: a worker killed mid-job on each broker, a lost message, a broker
outage under a real web server, and what /health says about workers and beat.

Workers run with embedded beat (`-B`) and only the reaper's schedule, every 2 s; heartbeats are
refreshed every second and stale after 6 s (the defaults are 10 s and 60 s). The job is held by
tests.seams.HoldTrainer at a known point, so the kill lands mid-job by construction.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from rest_framework.authtoken.models import Token

from registry import services
from registry.models import (
    JobStatus,
    Liveness,
    ModelStatus,
    ModelVersion,
    TrainingJob,
)
from tests.conftest import wait_until
from tests.seams import HOLD_TRAINER
from training.promotion.models import PromotionPolicy
from training.retraining.scheduler import beat_schedules_ensure

from .conftest import store_bars

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_TIMEOUT_S = 6
TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "clm_project.settings.test",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": _database_url(),
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        **extra,
    }


class Worker:
    """`celery worker -B` in a process group of its own, so that a kill takes all of it."""

    def __init__(self, *, broker: str, backend: str, prefix: str, **extra: str) -> None:
        self.hostname = f"clm-live-{uuid.uuid4().hex[:8]}@localhost"
        self.log = Path(tempfile.gettempdir()) / f"{self.hostname.split('@')[0]}.log"
        env = _env(
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=backend,
            CLM_QUEUE_PREFIX=prefix,
            CLM_EXTRA_TRAINERS=HOLD_TRAINER,
            CLM_JOB_HEARTBEAT_INTERVAL="1",
            CLM_JOB_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S),
            CLM_LIVENESS_INTERVAL="1",
            CLM_PENDING_REDISPATCH_AFTER="0",
            CLM_EVENTS_CONSUME="false",
            **extra,
        )
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "clm_project", "worker", "-B",
                 "-c", "1", "-P", "prefork", "-n", self.hostname, "--without-gossip",
                 "--without-mingle", "-l", "info"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(
            f"worker {self.hostname} recording itself (log: {self.log})",
            lambda: (
                (self.proc.poll() is None and Liveness.objects.filter(name=self.hostname).exists())
                or self._exited()
            ),
            timeout=120,
        )

    def _exited(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited early; see {self.log}")
        return False

    def kill(self) -> None:
        """SIGKILL the whole worker: main process, pool child, embedded beat."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Start workers (stopped at teardown) on the run's own queue names, where this process and
    beat's entries send (the run's CLM_QUEUE_PREFIX, whose queues the run deletes at its end)."""
    started: list[Worker] = []
    prefix = settings.CLM_QUEUE_PREFIX

    def start(broker: str = "", backend: str = "", **extra: str) -> Worker:
        worker = Worker(
            broker=broker or settings.CELERY_BROKER_URL,
            backend=backend or settings.CELERY_RESULT_BACKEND,
            prefix=prefix,
            **extra,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def reaper_only() -> None:
    """Beat runs the reaper alone, every 2 s (the admin-editable interval of its entry)."""
    beat_schedules_ensure()
    PeriodicTask.objects.exclude(task="training.reap_stuck_jobs").update(enabled=False)
    every_2s, _ = IntervalSchedule.objects.get_or_create(every=2, period="seconds")
    PeriodicTask.objects.filter(task="training.reap_stuck_jobs").update(interval=every_2s)


@pytest.fixture
def hold(tmp_path) -> dict[str, str]:
    """HoldTrainer params holding in `positions`, after the version is registered."""
    gate, started = tmp_path / "hold", tmp_path / "started"
    gate.touch()
    return {"hold_in": "positions", "hold_while": str(gate), "started": str(started)}


def _permissive_gates() -> None:
    PromotionPolicy.objects.create(
        model_type="other", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=0,
    )  # fmt: skip


def _pending_job(symbol: str, params: dict[str, str]) -> TrainingJob:
    """Created without a dispatch: the workers' reaper sends it on their own broker."""
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type="other", symbol=symbol, timeframe="1h", params=params
        ),
        dispatch=False,
    )
    return job


def _job(job_id) -> TrainingJob:
    return TrainingJob.objects.select_related("version").get(pk=job_id)


def _finished(job_id, what: str, timeout: float) -> TrainingJob:
    return wait_until(what, lambda: (job := _job(job_id)).status in TERMINAL and job, timeout)


BROKERS = {
    "rabbitmq": lambda: settings.CELERY_BROKER_URL,
    "redis": lambda: os.environ.get("CLM_TEST_REDIS_BROKER_URL", ""),
}


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_a_worker_killed_mid_job_is_noticed_and_the_job_retried(
    broker, workers, reaper_only, hold, operator_client
):
    url = BROKERS[broker]()
    if not url:
        pytest.skip("CLM_TEST_REDIS_BROKER_URL is not set")
    _permissive_gates()
    store_bars("HOLDUSD", 2_000, seed=3)
    job = _pending_job("HOLDUSD", hold)
    first = workers(url)
    wait_until("the job held in its evaluate step", lambda: Path(hold["started"]).exists(), 120)

    held = _job(job.pk)
    assert held.status == JobStatus.IN_PROGRESS and held.attempts == 1
    # The step it is in, since when, in the API and the metrics; the heartbeat keeps beating.
    body = operator_client.get(f"/clm/jobs/{job.pk}").json()
    assert body["step"] == "evaluate" and body["step_started_at"] is not None
    assert body["progress"] == pytest.approx(0.67)
    metrics = Client().get("/metrics").content.decode()
    assert f'clm_training_job_progress{{model_id="{held.model.model_id}",' in metrics
    assert 'step="evaluate"' in metrics
    beat = held.heartbeat_at
    wait_until(
        "the heartbeat refreshed during the held step", lambda: _job(job.pk).heartbeat_at > beat, 10
    )
    dead_version = held.version
    assert dead_version is not None and dead_version.status == ModelStatus.TRAINING

    first.kill()
    Path(hold["hold_while"]).unlink()  # the next attempt goes straight through
    second = workers(url)
    up = time.monotonic()
    wait_until("the job retried", lambda: _job(job.pk).attempts == 2, 60)
    retried_after = time.monotonic() - up
    done = _finished(job.pk, "the job finished", 180)

    assert done.status == JobStatus.COMPLETED, done.error_message
    assert done.attempts == 2 and retried_after < 60
    dead_version.refresh_from_db()
    assert dead_version.status == ModelStatus.FAILED
    live = ModelVersion.objects.filter(model=done.model).exclude(
        status__in=[ModelStatus.FAILED, ModelStatus.RETIRED]
    )
    assert list(live) == [done.version] and done.version.version == 2
    assert second.proc.poll() is None


def test_a_lost_message_is_sent_again_and_trained(workers, reaper_only):
    """Marked queued as a dispatch does, never sent: the reaper sends it after the timeout."""
    store_bars("LOSTUSD", 2_000, seed=4)
    _permissive_gates()
    job = _pending_job("LOSTUSD", {})
    TrainingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.QUEUED, celery_task_id=str(uuid.uuid4()), dispatched_at=timezone.now()
    )
    workers(CLM_DISPATCH_TIMEOUT="3")
    done = _finished(job.pk, "the lost job trained", 120)
    assert done.status == JobStatus.COMPLETED, done.error_message
    assert done.redispatches == 1 and done.attempts == 1 and done.version.version == 1


# ---------------------------------------------------------------------------------------------
# A broker outage under a real web server


def _http(method: str, url: str, body: Any = None, **headers: str) -> tuple[int, Any, float]:
    """(status, JSON body, seconds taken) of one request to the web server under test."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **headers}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, json.loads(text), time.monotonic() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until("redis-server answering", lambda: _answers(port), 20)
    return proc


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def redis_port() -> int:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    return _free_port()


def test_a_broker_outage_never_blocks_a_request_and_the_job_waits_pending(
    redis_port, workers, reaper_only
):
    store_bars("DOWNUSD", 2_000, seed=5)
    store_bars("WARMUSD", 2_000, seed=6)
    _permissive_gates()
    user = User.objects.create_user("ops", password="pw-ops-12345")
    user.user_permissions.add(Permission.objects.get(codename="request_training"))
    token = Token.objects.create(user=user).key
    broker = f"redis://127.0.0.1:{redis_port}/0"
    backend = f"redis://127.0.0.1:{redis_port}/1"
    redis = _redis(redis_port)
    web_port = _free_port()
    web_log = Path(tempfile.gettempdir()) / f"clm-live-web-{web_port}.log"
    with open(web_log, "w") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "clm_project.wsgi", "-b",
             f"127.0.0.1:{web_port}", "-w", "1", "--timeout", "60"],
            env=_env(
                CELERY_BROKER_URL=broker,
                CELERY_RESULT_BACKEND=backend,
                CLM_LIVENESS_INTERVAL="1",
                CLM_EXTRA_TRAINERS=HOLD_TRAINER,  # the web checks params with the trainer
            ),
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{web_port}"
    auth = {"Authorization": f"Token {token}"}
    try:
        wait_until(f"the web answering (log: {web_log})", lambda: _answers(web_port), 60)
        assert _http("GET", f"{base}/health")[1]["broker"]["ok"] is True

        # A first request while the broker is up (and warms the web's imports, about 2 s).
        warm = {"model_type": "other", "symbol": "WARMUSD", "timeframe": "1h"}
        status, body, _ = _http("POST", f"{base}/clm/train", warm, **auth)
        assert status == 202 and body["status"] == "queued", body
        warm_id = body["id"]

        _stop(redis)
        train = {"model_type": "other", "symbol": "DOWNUSD", "timeframe": "1h"}
        status, body, took = _http("POST", f"{base}/clm/train", train, **auth)
        assert status == 202, body
        assert body["status"] == "pending" and took < 2.5, took
        status, health, took = _http("GET", f"{base}/health")
        assert status == 200 and health["broker"]["ok"] is False and took < 2.5, took
        job_id = body["id"]
        assert _job(job_id).status == JobStatus.PENDING

        redis = _redis(redis_port)
        worker = workers(broker, backend, CLM_DISPATCH_TIMEOUT="5")
        done = _finished(job_id, "the job dispatched and trained once the broker is back", 120)
        assert done.status == JobStatus.COMPLETED, done.error_message
        # This Redis keeps nothing across a restart: the message sent before the outage is lost,
        # and the reaper sends it again once the job has waited the dispatch timeout.
        warm_done = _finished(warm_id, "the job queued before the outage", 60)
        assert warm_done.status == JobStatus.COMPLETED, warm_done.error_message

        report = _http("GET", f"{base}/health")[1]
        assert report["broker"]["ok"] is True
        assert report["workers"]["ok"] is True and worker.hostname in report["workers"]["hostnames"]
        assert report["workers"]["age_s"] < 5
        assert report["beat"]["ok"] is True and report["beat"]["age_s"] < 5
        worker.kill()
        time.sleep(4)  # past three liveness intervals (1 s here)
        report = _http("GET", f"{base}/health")[1]
        assert report["workers"]["ok"] is False and report["beat"]["ok"] is False
    finally:
        _stop(web)
        _stop(redis)
        connection.close()
