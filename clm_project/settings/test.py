"""Test settings: PostgreSQL and the real broker, as users run them."""

import os

from .base import *  # noqa: F403

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/clm")
import dj_database_url  # noqa: E402

DATABASES = {"default": dj_database_url.config(conn_max_age=0)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("tests run on PostgreSQL: set DATABASE_URL to a postgres:// URL")

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
# Unit tests dispatch nothing to a worker unless they start one; see tests/conftest.py.
CELERY_TASK_ALWAYS_EAGER = False
