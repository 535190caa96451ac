"""Settings come from the environment; production refuses unsafe ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "clm-test-key-" + "0123456789abcdef" * 3  # 61 characters, as check --deploy wants


def load_production(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY"}} | {
        "DJANGO_SETTINGS_MODULE": "clm_project.settings.production",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECRET_KEY": STRONG_KEY, "DEBUG": "true"}, "refuse DEBUG"),
        ({}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"SECRET_KEY": STRONG_KEY[:49]}, "50 characters"),
        ({"SECRET_KEY": "k" * 60}, "SECRET_KEY"),
        ({"SECRET_KEY": STRONG_KEY, "DATABASE_URL": ""}, "DATABASE_URL"),
    ],
)
def test_production_settings_refuse_unsafe_configuration(env, message):
    result = load_production(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_production_settings_start_with_a_real_key():
    result = load_production(SECRET_KEY=STRONG_KEY, DEBUG="false")
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_sqlite_is_only_the_fallback_without_database_url(tmp_path):
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.DATABASES['default']['ENGINE'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "clm_project.settings.local"
    engine = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert engine == "django.db.backends.sqlite3"
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/clm"
    engine = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert engine == "django.db.backends.postgresql"


def _settings_module_of(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "SECRET_KEY"}
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environment | {"PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_workers_default_to_production_and_manage_py_to_local():
    show = "import os; print(os.environ['DJANGO_SETTINGS_MODULE'])"
    worker = _settings_module_of(f"import clm_project.celery; {show}", SECRET_KEY=STRONG_KEY)
    assert worker.stdout.strip() == "clm_project.settings.production", worker.stderr
    refused = _settings_module_of(
        "from clm_project.celery import app; app.loader.import_default_modules()"
    )
    assert "ImproperlyConfigured" in refused.stderr and "SECRET_KEY" in refused.stderr
    manage = subprocess.run(
        [sys.executable, "manage.py", "diffsettings", "--all"],
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert manage.returncode == 0, manage.stderr
    assert "DEBUG = True" in manage.stdout


def test_the_redis_visibility_timeout_outlasts_every_hard_time_limit():
    from django.conf import settings

    from clm_project.settings.base import broker_transport_options

    longest = max(hard for _, hard in settings.CLM_TRAINING_TIME_LIMITS.values())
    redis = broker_transport_options("redis://127.0.0.1:6379/0")
    assert redis["visibility_timeout"] > longest
    assert broker_transport_options("amqp://guest:guest@127.0.0.1:5672//") == {}


def test_every_queue_and_exchange_name_carries_the_prefix():
    from django.conf import settings

    prefix = settings.CLM_QUEUE_PREFIX
    assert prefix.startswith("clm-test-")  # the test run's own (settings.test)
    names = [settings.CELERY_TASK_DEFAULT_QUEUE, settings.CLM_EVENTS_EXCHANGE]
    names += [settings.CLM_EVENTS_INCOMING_QUEUE]
    for queue in settings.CELERY_TASK_QUEUES:
        names += [queue.name, queue.exchange.name, queue.routing_key]
    names += [route["queue"] for route in settings.CELERY_TASK_ROUTES.values()]
    assert all(name.startswith(prefix) for name in names), names
