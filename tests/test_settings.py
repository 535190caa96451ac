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
