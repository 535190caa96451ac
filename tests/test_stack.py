"""The whole stack as the README starts it: `honcho start` runs the Procfile (gunicorn, a Celery
worker and beat) with production settings, PostgreSQL and the broker from the environment.

Every family is trained through HTTP with a token, as a client would; beat's outbox relay then
delivers every outbox event, once per event id, to a queue bound on the events exchange. Runs on
RabbitMQ and on Redis, with this run's database and queue names (tests/conftest.py `broker`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from kombu import Connection, Queue
from rest_framework.authtoken.models import Token

from registry.models import JobStatus, OutboxEvent
from tests.training.conftest import store_bars
from training.retraining.events import events_exchange
from training.trainers import DEMO_PARAMS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("xgboost", "lightgbm", "nhits", "patchtst", "rl_v2", "rl_v3")
TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
START_TIMEOUT_S = 120
TRAIN_TIMEOUT_S = 600
RELAY_TIMEOUT_S = 60


@dataclass
class Stack:
    url: str
    log: Path
    token: str

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers=self._auth(), timeout=30)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self._auth(), timeout=30)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(port: int) -> dict[str, str]:
    """What a deployment sets: production settings, its database, broker and storage."""
    db = settings.DATABASES["default"]
    host = db["HOST"] or "127.0.0.1"
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "clm_project.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "BEHIND_TLS_PROXY": "false",  # plain HTTP on loopback; TLS ends at a proxy in prod
        "STATIC_ROOT": str(Path(settings.ARTIFACT_ROOT).parent / "clm-stack-static"),
        "DATABASE_URL": f"postgres://{db['USER']}@{host}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "CLM_QUEUE_PREFIX": settings.CLM_QUEUE_PREFIX,
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
    }


def _descendants(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = {int(child) for child in found.stdout.split()}
    return children.union(*(_descendants(child) for child in children))


@pytest.fixture
def stack(purge_queues) -> Iterator[Stack]:
    """The release step, then `honcho start` in the repository root; stopped at the end (SIGTERM,
    as honcho stops)."""
    call_command("setup_schedules", stdout=open(os.devnull, "w"))  # noqa: SIM115
    user = User.objects.create_user("trader-desk", password=secrets.token_urlsafe(16))
    user.user_permissions.add(Permission.objects.get(codename="request_training"))
    token = Token.objects.create(user=user).key

    port = _free_port()
    env = _environment(port)
    # The release step the README runs before the stack (migrations: none left; collectstatic).
    release = subprocess.run(
        [sys.executable, "-m", "clm_project.release"], cwd=ROOT, env=env, capture_output=True
    )
    assert release.returncode == 0, release.stderr.decode()
    log = Path(tempfile.gettempdir()) / f"clm-stack-{uuid.uuid4().hex[:8]}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/honcho"), "start", "-f", "Procfile", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Stack(f"http://127.0.0.1:{port}", log, token)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            seen |= _descendants(proc.pid)
            assert proc.poll() is None, f"honcho exited:\n{running.tail()}"
            try:
                if requests.get(running.url + "/health", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not up yet, or still importing
                pass
            assert time.monotonic() < deadline, f"no /health in time:\n{running.tail()}"
            time.sleep(0.5)
        yield running
    finally:
        seen |= _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in seen:  # whatever outlived honcho (it should not), if it is still this stack's
            with contextlib.suppress(OSError):
                if env["SECRET_KEY"].encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def subscriber(broker) -> Iterator[Queue]:
    """A durable queue of this run's bound to every event on the exchange."""
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        events_exchange()(channel).declare()
        queue = Queue(
            f"{settings.CLM_QUEUE_PREFIX}stack-subscriber-{uuid.uuid4().hex[:8]}",
            exchange=events_exchange(),
            routing_key="#",
            durable=True,
        )(channel)
        queue.declare()
        try:
            yield queue
        finally:
            queue.delete()


def _train_all(stack: Stack) -> dict[str, str]:
    jobs = {}
    for family in FAMILIES:
        response = stack.post(
            "/clm/train",
            {"model_type": family, "symbol": "BTCUSDT", "timeframe": "1h",
             "params": DEMO_PARAMS[family], "seed": 1},
        )  # fmt: skip
        assert response.status_code == 202, (family, response.status_code, response.text)
        jobs[family] = response.json()["id"]
    return jobs


def _wait_for_jobs(stack: Stack, jobs: dict[str, str]) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while len(done) < len(jobs):
        for family, job_id in jobs.items():
            if family not in done:
                body = stack.get(f"/clm/jobs/{job_id}").json()
                if body["status"] in TERMINAL:
                    done[family] = body
        if len(done) < len(jobs):
            assert time.monotonic() < deadline, (
                f"jobs unfinished after {TRAIN_TIMEOUT_S}s: "
                f"{sorted(set(jobs) - set(done))}\n{stack.tail()}"
            )
            time.sleep(1.0)
    return done


def test_the_procfile_stack_trains_every_family_and_relays_every_event_once(
    broker, stack, subscriber
):
    store_bars("BTCUSDT", 3_000, seed=11)
    jobs = _wait_for_jobs(stack, _train_all(stack))
    for family, job in jobs.items():
        assert job["status"] == "completed", (family, job["step"], job["error_message"])
        assert job["progress"] == 1.0

    versions = stack.get("/clm/models?symbol=BTCUSDT").json()["results"]
    assert sorted(v["model_type"] for v in versions) == sorted(FAMILIES)

    # Beat runs the relay every 5 s: wait until it has published every event of the run.
    deadline = time.monotonic() + RELAY_TIMEOUT_S
    while OutboxEvent.objects.filter(published_at__isnull=True).exists():
        assert time.monotonic() < deadline, f"outbox not relayed:\n{stack.tail()}"
        time.sleep(1.0)
    received = []
    while (message := subscriber.get(no_ack=True)) is not None:
        received.append(json.loads(message.body))
    ids = Counter(event["event_id"] for event in received)
    outbox = {str(pk) for pk in OutboxEvent.objects.values_list("pk", flat=True)}
    assert set(ids) == outbox, "an event was lost or invented"
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    kinds = Counter(event["event_type"] for event in received)
    assert kinds["training_job_created"] == kinds["model_trained"] == len(FAMILIES)
    assert kinds["model_evaluated"] == len(FAMILIES)
