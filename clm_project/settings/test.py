"""Test settings: PostgreSQL and the real broker, as users run them."""

import os
import tempfile
import uuid
from pathlib import Path

import dj_database_url

# Queue and exchange names of this run's own (worker subprocesses inherit them): the suite never
# reads or purges anyone else's messages on a shared broker. Set before base reads it.
os.environ["CLM_QUEUE_PREFIX"] = (
    os.environ.get("CLM_QUEUE_PREFIX") or f"clm-test-{uuid.uuid4().hex[:8]}."
)

from .base import *  # noqa: F403
from .base import STORAGES, broker_transport_options

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/clm")
DATABASES = {"default": dj_database_url.config(conn_max_age=0)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("tests run on PostgreSQL: set DATABASE_URL to a postgres:// URL")

# One artifact root per test run, shared with the worker subprocesses the tests start.
ARTIFACT_ROOT = Path(os.environ.setdefault("ARTIFACT_ROOT", tempfile.mkdtemp(prefix="clm-art-")))
if CLM_ARTIFACT_STORAGE == "filesystem":  # noqa: F405
    STORAGES = {
        **STORAGES,
        "artifacts": {**STORAGES["artifacts"], "OPTIONS": {"location": str(ARTIFACT_ROOT)}},
    }
_CACHE = ARTIFACT_ROOT.parent / f"{ARTIFACT_ROOT.name}-cache"
CLM_ARTIFACT_CACHE_DIR = Path(os.environ.setdefault("CLM_ARTIFACT_CACHE_DIR", str(_CACHE)))

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
# The brokers the README offers, for the tests that run on each (tests/conftest.py `broker`).
CLM_TEST_BROKER_URLS = {
    "rabbitmq": CELERY_BROKER_URL,
    "redis": os.environ.get("CLM_TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/3"),
}
# Nothing runs eagerly: a test that needs the pipeline starts a real worker (tests/conftest.py).
CELERY_TASK_ALWAYS_EAGER = False
# Static files straight from the apps, as under runserver: no collectstatic before each run.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
