"""Shared fixtures: PostgreSQL (pytest-django), API clients with and without rights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.utils import timezone
from kombu import Connection, Queue
from rest_framework.test import APIClient

from clm_project.celery import app as celery_app
from registry import services
from registry.artifacts import StoredArtifact
from registry.models import EvaluationResult, ModelStatus, ModelVersion, TrainingJob
from tests.s3 import S3Bucket, S3Server, bucket_create


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


def wait_until(what: str, check: Callable[[], object], timeout: float) -> object:
    """Poll `check` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _start_worker(
    db_name: str,
    *,
    concurrency: int = 1,
    queues: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start a worker consuming `queues` (default: all of this run's), with `env` on top of the
    test environment (another machine's artifact store or local directories)."""
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
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        **(env or {}),
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
            ",".join(queues or [queue.name for queue in settings.CELERY_TASK_QUEUES]),
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
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early; see {log.name}")
            if celery_app.control.ping(destination=[hostname], timeout=1.0):
                return proc, hostname
        raise RuntimeError(f"celery worker did not answer a ping within 60 s; see {log.name}")
    except BaseException:
        _stop_worker(proc)
        raise


def _stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def own_queues() -> list[Queue]:
    """The queues this run declares: its Celery queues and its incoming-events queue, all named
    with the run's CLM_QUEUE_PREFIX (settings.test)."""
    from training.retraining.events import incoming_queue

    return [*settings.CELERY_TASK_QUEUES, incoming_queue()]


def queues_purge(url: str) -> None:
    """Empty this run's own queues on the broker at `url` (declaring them if need be)."""
    with Connection(url) as conn:
        channel = conn.default_channel
        for queue in own_queues():
            bound = queue(channel)
            bound.declare()
            bound.purge()


def _celery_use_broker(url: str) -> None:
    """Point the test process's Celery app (dispatch, control) at the broker at `url`."""
    from clm_project.settings.base import broker_transport_options

    # Celery reads the CELERY_BROKER_URL variable before its configuration.
    os.environ["CELERY_BROKER_URL"] = url
    celery_app.conf.broker_url = url
    celery_app.conf.broker_transport_options = broker_transport_options(url)
    # kombu keeps one pool per broker URL (kombu.pools): the app picks the pool of the new URL.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture(params=sorted(settings.CLM_TEST_BROKER_URLS))
def broker(request, settings) -> Iterator[str]:
    """Run the test once on each broker the README offers ("rabbitmq", "redis").

    The test process (dispatch, the relay, /metrics) and the workers it starts all use it.
    """
    from clm_project.settings.base import broker_transport_options

    url = settings.CLM_TEST_BROKER_URLS[request.param]
    previous = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(url)
    _celery_use_broker(url)
    _used_brokers.add(url)
    try:
        yield request.param
    finally:
        _celery_use_broker(previous)


_used_brokers: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def _delete_own_queues() -> Iterator[None]:
    """At the end of the run, delete the queues and exchanges it declared (its prefix alone)."""
    _used_brokers.add(settings.CELERY_BROKER_URL)
    yield
    from training.retraining.events import events_exchange

    names = [queue.name for queue in settings.CELERY_TASK_QUEUES]
    for url in _used_brokers:
        if url.startswith("redis"):
            _redis_forget(url, settings.CLM_QUEUE_PREFIX)
            continue
        try:
            with Connection(url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
                channel = conn.default_channel
                for queue in own_queues():
                    queue(channel).delete()
                for exchange in [*names, events_exchange().name]:
                    channel.exchange_delete(exchange)
        except Exception as exc:  # a broker that went away: nothing to tidy there
            print(f"could not delete this run's queues on {url}: {exc}")


def _redis_forget(url: str, prefix: str) -> None:
    """Delete this run's lists and bindings from the Redis database it uses as a broker.

    kombu's Redis transport forgets a binding only when the channel that made it deletes a queue
    that still holds messages; the keys are named after the queues and exchanges, so the run's
    prefix finds exactly its own.
    """
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        for pattern in (
            f"{prefix}*",
            f"_kombu.binding.{prefix}*",
            f"_kombu.binding_permanent.{prefix}*",
        ):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
    except redis.RedisError as exc:
        print(f"could not delete this run's keys on {url}: {exc}")


@pytest.fixture
def purge_queues(broker):
    """Drop messages that earlier tests of this run left on its own queues (never others')."""
    queues_purge(settings.CELERY_BROKER_URL)
    return broker


@pytest.fixture
def live_worker(transactional_db, purge_queues):
    """A real `celery worker` subprocess on the test's broker (see `broker`), using the test
    database."""
    proc, hostname = _start_worker(connection.settings_dict["NAME"])
    yield hostname
    _stop_worker(proc)


@pytest.fixture
def start_worker(transactional_db, purge_queues) -> Iterator[Callable[..., str]]:
    """`start_worker(queues=..., env=..., concurrency=...)`: real `celery worker` subprocesses on
    the test's broker, as many as the test starts, stopped at teardown; returns the hostname."""
    started: list[subprocess.Popen] = []

    def start(**options) -> str:
        proc, hostname = _start_worker(connection.settings_dict["NAME"], **options)
        started.append(proc)
        return hostname

    yield start
    for proc in started:
        _stop_worker(proc)


# ---------------------------------------------------------------------------------------------
# Artifacts on a real S3-protocol server (tests/s3.py).


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> S3Bucket:
    """A fresh bucket of this test's own."""
    return bucket_create(s3_server.endpoint)


@pytest.fixture
def s3_artifacts(s3_bucket, settings, monkeypatch, tmp_path) -> S3Bucket:
    """This process keeps its artifacts in `s3_bucket` (as CLM_ARTIFACT_STORAGE=s3 does), with a
    local cache of its own."""
    from clm_project.settings.base import artifact_storage_backend

    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = {**settings.STORAGES, "artifacts": artifact_storage_backend("s3")}
    settings.CLM_ARTIFACT_CACHE_DIR = tmp_path / "artifact-cache"
    return s3_bucket


# ---------------------------------------------------------------------------------------------
# Registry rows, made through the services as the pipeline makes them.

PASSING_METRICS = {
    "sharpe": 1.8, "sortino": 2.4, "max_drawdown": 0.08, "total_return": 0.35, "cagr": 0.41,
    "calmar": 5.1, "exposure": 0.6, "trades": 80, "win_rate": 0.56, "profit_factor": 1.7,
    "avg_trade_return": 0.004, "avg_bars_held": 6.5, "psr": 0.97, "dsr": 0.91,
}  # fmt: skip

# The status changes that lead from `training` to each status (production: then a promotion).
_STATUS_PATH = {
    ModelStatus.TRAINING: [],
    ModelStatus.CANDIDATE: [ModelStatus.CANDIDATE],
    ModelStatus.SHADOW: [ModelStatus.SHADOW],
    ModelStatus.FAILED: [ModelStatus.FAILED],
    ModelStatus.RETIRED: [ModelStatus.CANDIDATE, ModelStatus.RETIRED],
    ModelStatus.PRODUCTION: [ModelStatus.CANDIDATE],
}


def evaluation_add(*, version: ModelVersion, passed: bool = True, **metrics) -> EvaluationResult:
    """Record an evaluation of `version` (passing its gates unless `passed=False`)."""
    end = timezone.now()
    values = {**PASSING_METRICS, **metrics}
    gates = {
        "sharpe": {"value": values["sharpe"], "threshold": 1.0, "op": ">=", "passed": passed},
        "trades": {"value": values["trades"], "threshold": 50, "op": ">=", "passed": True},
    }
    return services.evaluation_record(
        version=version, metrics=values, window_start=end - timedelta(days=30), window_end=end,
        n_bars=720, fee=0.0005, periods_per_year=8760, n_trials=1, gates=gates, passed=passed,
    )  # fmt: skip


def version_add(
    *,
    model_type: str = "xgboost",
    symbol: str = "BTCUSDT",
    timeframe: str = "1h",
    status: str = ModelStatus.CANDIDATE,
    passed: bool | None = True,
    sharpe: float = 1.8,
    artifact: StoredArtifact | None = None,
) -> ModelVersion:
    """Register a version, evaluate it (`passed=None`: not at all) and move it to `status`.

    `status="production"` promotes it, retiring the model's current production version.
    """
    model = services.registered_model_get_or_create(
        model_type=model_type, symbol=symbol, timeframe=timeframe
    )
    version = services.model_version_register(
        model=model, params={"max_depth": 4}, feature_spec={"lags": [1, 2]},
        training_metrics={"loss": 0.1}, manifest={"format": "test"},
        artifact_path=artifact.path if artifact else "",
        artifact_sha256=artifact.sha256 if artifact else "",
        artifact_size=artifact.size if artifact else 0,
    )  # fmt: skip
    if passed is not None:
        evaluation_add(version=version, passed=passed, sharpe=sharpe)
    for step in _STATUS_PATH[status]:
        services.model_version_set_status(
            model_id=model.model_id, version=version.version, status=step, actor="test"
        )
    if status == ModelStatus.PRODUCTION:
        services.model_version_promote(
            model_id=model.model_id, version=version.version, actor="test"
        )
    version.refresh_from_db()
    return version


@pytest.fixture
def make_version(db) -> Callable[..., ModelVersion]:
    """`make_version(**kwargs)`: see `version_add`."""
    return version_add


@pytest.fixture
def training_queue(db) -> Iterator[None]:
    """Take back, at teardown, the `training` messages this test's jobs sent to the real broker.

    No worker runs them. Other messages on the queue (another run's) are left alone: they are
    fetched unacknowledged and return to the queue when the channel closes.
    """
    yield
    sent = set(
        TrainingJob.objects.exclude(celery_task_id="").values_list("celery_task_id", flat=True)
    )
    if not sent:
        return
    queue = next(q for q in settings.CELERY_TASK_QUEUES if q.name == settings.CLM_TRAINING_QUEUE)
    with Connection(settings.CELERY_BROKER_URL) as conn, conn.channel() as channel:
        bound = queue(channel)
        while (message := bound.get()) is not None:
            if message.headers.get("id") in sent:
                message.ack()


@pytest.fixture
def bar_add():
    """Store the fewest bars of a series that a training request accepts (500 flat bars)."""
    from training.models import Bar
    from training.retraining.requests import MIN_BARS

    def add(symbol: str, timeframe: str = "1h") -> None:
        now = timezone.now().replace(minute=0, second=0, microsecond=0)
        Bar.objects.bulk_create(
            Bar(
                symbol=symbol.upper(),
                timeframe=timeframe,
                timestamp=now - timedelta(hours=i),
                open=1.0,
                high=1.0,
                low=1.0,
                close=1.0,
                volume=1.0,
            )
            for i in range(MIN_BARS)
        )

    return add
