"""Test settings: PostgreSQL and the real broker, as users run them."""

import os
import tempfile
from pathlib import Path

import dj_database_url

from .base import *  # noqa: F403
from .base import STORAGES

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/clm")
DATABASES = {"default": dj_database_url.config(conn_max_age=0)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("tests run on PostgreSQL: set DATABASE_URL to a postgres:// URL")

# One artifact root per test run, shared with the worker subprocesses the tests start.
ARTIFACT_ROOT = Path(os.environ.setdefault("ARTIFACT_ROOT", tempfile.mkdtemp(prefix="clm-art-")))
STORAGES = {
    **STORAGES,
    "artifacts": {**STORAGES["artifacts"], "OPTIONS": {"location": str(ARTIFACT_ROOT)}},
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
# Nothing runs eagerly: a test that needs the pipeline starts a real worker (tests/conftest.py).
CELERY_TASK_ALWAYS_EAGER = False
# Static files straight from the apps, as under runserver: no collectstatic before each run.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
