"""The web as deployed: production settings by default, the deployment check, gunicorn serving.

The gunicorn test does what the README's "Running it for real" says, in a database of its own:
`python -m clm_project.release` (migrate, collectstatic), then `gunicorn clm_project.wsgi`, with
no DJANGO_SETTINGS_MODULE, and talks HTTP to it as the TLS proxy in front would.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.databases import database_url, empty_database_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def production_env(**extra: str) -> dict[str, str]:
    """The environment the README documents for production, and nothing from the test settings."""
    dropped = {"DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "BEHIND_TLS_PROXY"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("SECURE_")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": database_url(settings.DATABASES["default"]["NAME"]),
        "ALLOWED_HOSTS": "clm.example.com,127.0.0.1,localhost",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        **extra,
    }


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# Which settings each entry point uses


SHOW_SETTINGS = "from django.conf import settings; print(settings.SETTINGS_MODULE, settings.DEBUG)"


@pytest.mark.parametrize("entry", ["wsgi", "asgi"])
def test_wsgi_and_asgi_default_to_production(entry):
    code = f"import clm_project.{entry}; {SHOW_SETTINGS}"
    result = run([sys.executable, "-c", code], production_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["clm_project.settings.production", "False"]


def test_manage_py_and_the_demo_keep_the_local_settings():
    env = {k: v for k, v in production_env().items() if k != "DATABASE_URL"}
    result = run([sys.executable, "manage.py", "shell", "-c", SHOW_SETTINGS], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["clm_project.settings.local", "True"]

    demo = run([sys.executable, "manage.py", "demo", "--families", "none"], production_env())
    assert "unknown families ['none']" in demo.stderr  # it got past the production refusal

    refused = run(
        [sys.executable, "manage.py", "demo"],
        production_env(DJANGO_SETTINGS_MODULE="clm_project.settings.production"),
    )
    assert refused.returncode != 0
    assert "not under production settings" in refused.stderr


@pytest.mark.slow
def test_the_demo_runs_on_the_embedded_sqlite_default(tmp_path):
    """`bash .ci/demo` as the README gives it: no DATABASE_URL and no broker, so SQLite and
    tasks in-process (here a file of the test's own, and a small market). Every job runs to
    the end, and a job that breaks makes the command fail."""
    env = {
        **{k: v for k, v in production_env().items() if k not in ("CELERY_BROKER_URL",)},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "LOG_LEVEL": "WARNING",
    }
    args = ["--families", "xgboost", "--bars", "3000", "--regime-bars", "600"]
    result = run([str(ROOT / ".ci" / "demo"), *args], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed at" not in result.stdout
    assert "sqlite3" in result.stdout  # the database line names the file
    table = result.stdout.split("== 6/6 the registry")[1]
    assert len(re.findall(r"^xgboost-(btc|eth)usdt-1h\s+[12]\s", table, re.M)) == 4


# ---------------------------------------------------------------------------------------------
# The deployment check


def test_check_deploy_is_clean_under_production_settings():
    env = production_env(DJANGO_SETTINGS_MODULE="clm_project.settings.production")
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_what_plain_http_costs():
    env = production_env(
        DJANGO_SETTINGS_MODULE="clm_project.settings.production", BEHIND_TLS_PROXY="false"
    )
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    for check in ("W004", "W008", "W012", "W016"):
        assert f"security.{check}" in result.stderr


def test_release_without_a_secret_key_is_one_clear_line():
    env = {k: v for k, v in production_env().items() if k != "SECRET_KEY"}
    result = run([sys.executable, "-m", "clm_project.release"], env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "release: production settings need SECRET_KEY set to a long random value (50 characters "
        "or more), e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    ]


# ---------------------------------------------------------------------------------------------
# gunicorn as the README starts it


@dataclass
class Server:
    port: int
    proc: subprocess.Popen

    def get(self, path: str, *, https: bool = True) -> http.client.HTTPResponse:
        """GET through the proxy (X-Forwarded-Proto: https) or straight over plain HTTP."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Host": "clm.example.com", **({"X-Forwarded-Proto": "https"} if https else {})}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.body = response.read()  # type: ignore[attr-defined]
        conn.close()
        return response


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(empty_database, tmp_path) -> Iterator[Server]:
    env = production_env(
        DATABASE_URL=database_url(empty_database),
        STATIC_ROOT=str(tmp_path / "static"),
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
    )
    release = run([str(BIN / "python"), "-m", "clm_project.release"], env)
    assert release.returncode == 0, release.stdout + release.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()

    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "clm_project.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(port, proc)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
        try:
            server.get("/health", https=False)
            break
        except OSError:
            assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
            time.sleep(0.5)
    yield server
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


@pytest.mark.slow
def test_gunicorn_serves_production_as_the_readme_says(gunicorn):
    # The admin's stylesheets: hashed names from the manifest, served by WhiteNoise.
    login = gunicorn.get("/admin/login/")
    assert login.status == 200
    stylesheets = [r for r in _references(login.body.decode()) if r.endswith(".css")]
    assert stylesheets and all(re.search(r"\.[0-9a-f]{12}\.css$", r) for r in stylesheets)
    for href in stylesheets:
        css = gunicorn.get(href)
        assert css.status == 200, href
        assert css.getheader("Content-Type").startswith("text/css")
        assert "max-age=315360000" in css.getheader("Cache-Control", "")

    # Swagger UI and ReDoc: nothing from another host, their scripts served here.
    for page in ("/api/docs/", "/api/redoc/"):
        docs = gunicorn.get(page)
        assert docs.status == 200, page
        html = docs.body.decode()
        assert not re.search(r"//(?!clm\.example\.com)[\w.-]+\.\w+/", html), html
        scripts = [r for r in _references(html) if r.endswith(".js")]
        assert scripts and all(not urlsplit(s).netloc for s in scripts)
        for src in scripts:
            js = gunicorn.get(src)
            assert js.status == 200, src
            assert "javascript" in js.getheader("Content-Type")
            assert len(js.body) > 100_000  # the real bundle

    # Errors: no debug page; JSON under /clm/.
    missing = gunicorn.get("/no-such-page")
    assert missing.status == 404
    assert b"URLconf" not in missing.body and b"DEBUG = True" not in missing.body
    api_missing = gunicorn.get("/clm/no-such-thing")
    assert api_missing.status == 404
    missing = {"detail": "Not found.", "code": "not_found", "errors": {}}  # the one error shape
    assert json.loads(api_missing.body) == missing

    # Health answers over plain HTTP (probes come from inside); other pages go to HTTPS.
    health = gunicorn.get("/health", https=False)
    assert health.status in (200, 503)
    assert json.loads(health.body)["database"]["ok"] is True
    plain = gunicorn.get("/admin/login/", https=False)
    assert plain.status == 301
    assert plain.getheader("Location") == "https://clm.example.com/admin/login/"
    assert "max-age=31536000" in login.getheader("Strict-Transport-Security", "")
