"""Registry API latency and throughput through a real HTTP server on loopback.

Seeds 100,000 versions over 2,000 models (database `clm_bench`, created, migrated and seeded on the
first run, reused after), serves the project with gunicorn (2 sync workers, production settings)
and times GET /clm/models pages, GET /clm/models/{id}/production and POST /clm/promote, with one
client and then 8 concurrent ones (token auth). Queries per request are counted in-process.

Run: .venv/bin/python benchmarks/bench_registry.py [--requests 400] [--reseed]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _django import setup
from _proc import cpu_seconds, cpu_ticks

DB_NAME = os.environ.get("CLM_BENCH_DB", "clm_bench")
ENV = {
    "DJANGO_SETTINGS_MODULE": "clm_project.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(48),
    "DEBUG": "false",
    "CELERY_BROKER_URL": "",
    "LOG_LEVEL": "WARNING",
    "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
    # Plain HTTP on loopback: no TLS proxy in front, so no redirect to https.
    "BEHIND_TLS_PROXY": "false",
}

Request = tuple[str, str, bytes | None]  # method, path, JSON body


@dataclass
class Result:
    name: str
    clients: int
    latencies_ms: list[float]
    seconds: float
    server_cpu_s: float

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        cpu_ms = self.server_cpu_s * 1000 / len(lat)
        return (
            f"{self.name:<44} {self.clients:>7} {len(lat):>8} {statistics.median(lat):>8.1f}"
            f" {p95:>8.1f} {len(lat) / self.seconds:>8.0f} {cpu_ms:>8.1f}"
        )


class ServerCPU:
    """CPU seconds used by the gunicorn workers and their PostgreSQL backends, from /proc.

    Unlike latency, this does not depend on what else the machine is running.
    """

    def __init__(self, server: subprocess.Popen) -> None:
        self.server = server

    def pids(self) -> list[int]:
        from django.db import connection

        pid = self.server.pid
        workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            backends = [row[0] for row in cursor.fetchall()]
        return [int(p) for p in workers] + backends

    def ticks(self) -> dict[int, int]:
        """utime + stime of each process, in clock ticks."""
        return cpu_ticks(self.pids())

    @staticmethod
    def seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
        """CPU used in between; a backend opened meanwhile (CONN_MAX_AGE expiry) counts in full."""
        return cpu_seconds(before, after)


def ensure_data(n_models: int, per_model: int, reseed: bool) -> str:
    """Seed when asked or when the row counts differ; return the benchmark user's API token."""
    from _seed_registry import seed
    from django.contrib.auth.models import Permission, User
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from registry.models import ModelVersion, RegisteredModel

    if (
        reseed
        or RegisteredModel.objects.count() != n_models
        or ModelVersion.objects.count() != n_models * per_model
        or ModelVersion.objects.filter(latest_evaluation__isnull=True).exists()  # an older seed
    ):
        started = time.perf_counter()
        seed(n_models=n_models, per_model=per_model)
        print(f"seeded {n_models * per_model:,} versions in {time.perf_counter() - started:.0f} s")
    with connection.cursor() as cursor:  # as autovacuum would, after earlier runs' promotions
        cursor.execute("VACUUM ANALYZE registry_modelversion, registry_evaluationresult")
    user, _ = User.objects.get_or_create(username="bench")
    user.user_permissions.add(*Permission.objects.filter(codename="promote_modelversion"))
    return Token.objects.get_or_create(user=user)[0].key


def promote_requests(model_ids: list[str], per_model: int) -> Callable[[int], Request]:
    """Promote, per model, whichever of its two newest versions is not live (thread-safe)."""
    from registry.models import ModelStatus, ModelVersion

    live = dict(
        ModelVersion.objects.filter(status=ModelStatus.PRODUCTION).values_list(
            "model__model_id", "version"
        )
    )
    lock = threading.Lock()

    def make(i: int) -> Request:
        model_id = model_ids[i % len(model_ids)]
        with lock:
            target = per_model - 1 if live[model_id] == per_model else per_model
            live[model_id] = target
        body = {"model_id": model_id, "version": target, "reason": "benchmark"}
        return "POST", "/clm/promote", json.dumps(body).encode()

    return make


def queries_per_request(token: str, model_id: str, per_model: int) -> list[tuple[str, int]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from registry.models import ModelStatus, ModelVersion

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    live = ModelVersion.objects.get(model__model_id=model_id, status=ModelStatus.PRODUCTION)
    target = per_model - 1 if live.version == per_model else per_model
    calls = [
        ("GET /clm/models?limit=10", lambda: client.get("/clm/models?limit=10")),
        ("GET /clm/models?limit=100", lambda: client.get("/clm/models?limit=100")),
        (
            "GET /clm/models?model_id=..&limit=50",
            lambda: client.get(f"/clm/models?model_id={model_id}&limit=50"),
        ),
        (
            "GET /clm/models/{id}/production",
            lambda: client.get(f"/clm/models/{model_id}/production"),
        ),
        (
            "POST /clm/promote",
            lambda: client.post(
                "/clm/promote",
                {"model_id": model_id, "version": target, "reason": "count"},
                content_type="application/json",
            ),
        ),
    ]
    counts = []
    for name, call in calls:
        with CaptureQueriesContext(connection) as captured:
            response = call()
        assert response.status_code == 200, (name, response.status_code, response.content[:300])
        counts.append((name, len(captured)))
    return counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    port: int, workers: int, root: Path | None = None, app: str = "clm_project.wsgi"
) -> subprocess.Popen:
    """gunicorn serving `app` of the checkout at `root` (this one by default); the benchmarks'
    own modules can be served too (_floor)."""
    root = root or Path(__file__).resolve().parent.parent
    path = f"{root}{os.pathsep}{Path(__file__).resolve().parent}"
    env = {**os.environ, **ENV, "DATABASE_URL": os.environ["DATABASE_URL"], "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "gunicorn", app, "-w", str(workers),
           "-b", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, cwd=root)
    deadline = time.monotonic() + 120  # imports are slow on a loaded machine
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not answer /health within 120 s")


def run(
    port: int,
    token: str,
    name: str,
    make: Callable[[int], Request],
    total: int,
    clients: int,
    cpu: ServerCPU | None,
) -> Result:
    """`total` requests from `clients` threads, each a new connection (sync workers close it)."""
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    latencies: list[float] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            method, path, body = make(i)
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            extra = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers={**headers, **extra})
            response = conn.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            conn.close()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}")
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu_before = cpu.ticks() if cpu else {}
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    used = cpu.seconds_between(cpu_before, cpu.ticks()) if cpu else 0.0
    return Result(name, clients, latencies, seconds, used)


def side_by_side(
    token: str,
    scenarios: list[tuple[str, Callable[[int], Request]]],
    requests: int,
    workers: int,
    baseline: Path,
) -> None:
    """This checkout and `baseline` on the same database, one client, alternating request by
    request, so both see the same machine load. (A baseline without this checkout's migrations
    still reads the tables: migrations here only add.)"""
    ours_port, theirs_port = free_port(), free_port()
    servers = [start_server(ours_port, workers), start_server(theirs_port, workers, baseline)]
    rows = []
    try:
        for name, make in scenarios:
            latencies: dict[int, list[float]] = {ours_port: [], theirs_port: []}
            for i in range(requests + 20):
                # Each server its own model or page (promote flips a model's live version)
                for k, port in enumerate((ours_port, theirs_port)):
                    request = make(2 * i + k)
                    result = run(port, token, name, lambda _, r=request: r, 1, 1, None)
                    if i >= 20:  # the first 20 warm connections and caches
                        latencies[port] += result.latencies_ms
            ours, theirs = sorted(latencies[ours_port]), sorted(latencies[theirs_port])
            rows.append((name, ours, theirs))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=60)
    load = os.getloadavg()
    print(
        f"\nside by side with {baseline} ({requests} alternating requests each, one client,"
        f" gunicorn -w {workers}), load average {load[0]:.1f} {load[1]:.1f}"
    )
    print(
        f"{'scenario':<44} {'p50 ms':>8} {'base p50':>8} {'p95 ms':>8} {'base p95':>8} {'ratio':>7}"
    )
    for name, ours, theirs in rows:
        p95 = int(len(ours) * 0.95)
        print(
            f"{name:<44} {statistics.median(ours):>8.1f} {statistics.median(theirs):>8.1f}"
            f" {ours[p95]:>8.1f} {theirs[p95]:>8.1f}"
            f" {statistics.median(theirs) / statistics.median(ours):>6.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=2_000)
    parser.add_argument("--per-model", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400, help="per scenario and client count")
    parser.add_argument("--pages", default="20,50", help="page sizes of GET /clm/models")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--baseline",
        help="another checkout (e.g. /path/to/main): serve both, alternate single requests "
        "between them scenario by scenario, print both latencies and their ratio",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.pages.split(",")]
    os.environ.update(ENV)
    setup(DB_NAME)

    from registry.models import RegisteredModel

    token = ensure_data(args.models, args.per_model, args.reseed)
    model_ids = list(RegisteredModel.objects.values_list("model_id", flat=True))
    rng = random.Random(7)
    rng.shuffle(model_ids)
    counts = queries_per_request(token, model_ids[0], args.per_model)

    def page(size: int) -> Callable[[int], Request]:
        def make(i: int) -> Request:
            return "GET", f"/clm/models?limit={size}&offset={rng.randrange(0, 50) * size}", None

        return make

    def one_model(i: int) -> Request:
        return "GET", f"/clm/models?model_id={model_ids[i % len(model_ids)]}", None

    def production(i: int) -> Request:
        return "GET", f"/clm/models/{model_ids[i % len(model_ids)]}/production", None

    scenarios = [
        *((f"GET /clm/models?limit={size} (first 50 pages)", page(size)) for size in sizes),
        ("GET /clm/models?model_id=.. (50 versions)", one_model),
        ("GET /clm/models/{id}/production", production),
        ("POST /clm/promote", promote_requests(model_ids[1:], args.per_model)),
    ]
    if args.baseline:
        side_by_side(token, scenarios, args.requests, args.workers, Path(args.baseline))
        return
    port = free_port()
    server = start_server(port, args.workers)
    cpu = ServerCPU(server)
    results: list[Result] = []
    try:
        for name, make in scenarios:
            run(port, token, name, make, 40, 2, cpu)  # warm both workers' connections and caches
            for clients in (1, 8):
                results.append(run(port, token, name, make, args.requests, clients, cpu))
    finally:
        server.terminate()
        server.wait(timeout=30)

    load = os.getloadavg()
    print(
        f"\nCLM registry API: {args.models * args.per_model:,} versions / {args.models:,} models,"
        f" gunicorn -w {args.workers} (sync) on 127.0.0.1, {os.cpu_count()} CPUs,"
        f" load average {load[0]:.1f} {load[1]:.1f}"
    )
    print(
        f"{'scenario':<44} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'req/s':>8} {'cpu ms':>8}"
    )
    for result in results:
        print(result.row())
    print("cpu ms: CPU time per request of the gunicorn workers and their PostgreSQL backends")
    print(f"\n{'queries per request (in-process, token auth)':<44} {'queries':>7}")
    for name, count in counts:
        print(f"{name:<44} {count:>7}")


if __name__ == "__main__":
    main()
