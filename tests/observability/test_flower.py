"""Flower on the project's Celery app, as docs/observability/README.md starts it: it answers its
health check, keeps its API behind basic auth and sees the test worker with CLM's tasks."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
AUTH = ("ops", "flower-test-pw")


def _get(url: str, *, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def flower(live_worker) -> Iterator[str]:
    """`celery -A clm_project flower` on a free loopback port; skipped if it cannot start."""
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "clm_project.settings.test",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
    }
    log = Path(tempfile.gettempdir()) / f"clm-flower-{port}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "clm_project", "flower", f"--port={port}",
        "--address=127.0.0.1", f"--basic-auth={AUTH[0]}:{AUTH[1]}",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.skip(f"flower exited at start (code {proc.returncode}); see {log}")
            try:
                if _get(f"{url}/healthcheck")[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"flower did not answer /healthcheck within 30 s; see {log}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_flower_sees_the_worker_and_its_tasks(flower, live_worker):
    assert _get(f"{flower}/healthcheck") == (200, b"OK")
    assert _get(f"{flower}/api/workers")[0] == 401
    workers: dict = {}
    deadline = time.monotonic() + 20
    while live_worker not in workers and time.monotonic() < deadline:
        status, body = _get(f"{flower}/api/workers?refresh=1", auth=AUTH)
        assert status == 200
        workers = json.loads(body)
    assert live_worker in workers, f"flower does not list {live_worker}: {sorted(workers)}"
    registered = workers[live_worker]["registered"]
    assert "training.run_training_job" in registered
    own = {settings.CLM_DEFAULT_QUEUE, settings.CLM_TRAINING_QUEUE}  # this run's, prefixed
    assert own <= {q["name"] for q in workers[live_worker]["active_queues"]}
