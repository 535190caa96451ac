"""Shared fixtures: PostgreSQL (pytest-django), API clients with and without rights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from rest_framework.test import APIClient

from clm_project.celery import app as celery_app


@pytest.fixture
def reader(db) -> User:
    return User.objects.create_user("reader", password="pw-reader-123")


@pytest.fixture
def operator(db) -> User:
    """A user granted the two registry permissions (request training; promote and roll back)."""
    user = User.objects.create_user("operator", password="pw-operator-123")
    user.user_permissions.add(
        Permission.objects.get(codename="request_training"),
        Permission.objects.get(codename="promote_modelversion"),
    )
    return user


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def reader_client(reader) -> APIClient:
    client = APIClient()
    client.force_authenticate(reader)
    return client


@pytest.fixture
def operator_client(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


# ---------------------------------------------------------------------------------------------
# A real Celery worker on the real broker, reading the test database.


def _start_worker(db_name: str, *, concurrency: int = 1) -> tuple[subprocess.Popen, str]:
    hostname = f"clm-test-{uuid.uuid4().hex[:8]}@localhost"
    url = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "clm_project.settings.test",
        "DATABASE_URL": (
            f"postgres://{url['USER']}@{url['HOST'] or '127.0.0.1'}:{url['PORT'] or 5432}/{db_name}"
        ),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
    }
    log = open(Path(tempfile.gettempdir()) / f"{hostname.split('@')[0]}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "clm_project",
            "worker",
            "-Q",
            "default,training",
            "-c",
            str(concurrency),
            "-P",
            "prefork",
            "-n",
            hostname,
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited early; see {log.name}")
        if celery_app.control.ping(destination=[hostname], timeout=1.0):
            return proc, hostname
    proc.kill()
    raise RuntimeError(f"celery worker did not answer a ping within 60 s; see {log.name}")


def _stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def purge_queues():
    """Drop messages that earlier tests left on the broker so a worker sees only this test's."""
    celery_app.control.purge()


@pytest.fixture
def live_worker(transactional_db, purge_queues):
    """A real `celery worker` subprocess on the real broker, using the test database."""
    proc, hostname = _start_worker(connection.settings_dict["NAME"])
    yield hostname
    _stop_worker(proc)
