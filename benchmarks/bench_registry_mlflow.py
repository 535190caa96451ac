"""CLM's registry API against MLflow's model registry server, same PostgreSQL, side by side.

For each registry size (default 200 and 2,000 versions, 50 per model) CLM gets a database of its
own (seeded by _seed_registry) and MLflow another (filled through its REST API, which times its
create-version call). Both servers run one worker on 127.0.0.1; the operations alternate between
them, request by request, so both see the same machine load:

  promote          POST /clm/promote                  POST .../registered-models/alias
  production read  GET /clm/models/{id}/production    GET  .../registered-models/alias
  search, all      GET /clm/models?limit=20            GET  .../model-versions/search?max_results=20
  search, a model  GET /clm/models/{id}/versions?limit=20   same, filter name='...'

Two reference lines follow, from a third server (benchmarks/_floor.py), each alternating with
MLflow's search: what gunicorn takes to answer from a plain WSGI function, and what Django and DRF
with CLM's settings take to answer an empty object to a token-authenticated request. No
authenticated CLM request can be faster than the second, so its ratio is the most any CLM search
could reach.

The configuration is the same on both sides: one worker process each (CLM: gunicorn -w 1 with
production settings, persistent database connections as deployed; MLflow: `mlflow server
--workers 1`, SQLAlchemy's connection pool), a new HTTP connection per request from one client,
the response read and parsed by the client on both. Besides latencies it prints each side's CPU
time per request: its server processes plus their PostgreSQL backends, read from /proc (a figure
that does not depend on what else the machine runs, unlike the latencies).

MLflow is a benchmark-only dependency (`pip install .[bench]`, or any environment with mlflow and
psycopg: `--mlflow /path/to/bin/mlflow`); it is never imported here.

Run: .venv/bin/python benchmarks/bench_registry_mlflow.py [--sizes 200,2000] [--requests 100]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from _proc import cpu_seconds, cpu_ticks
from bench_registry import ENV, ensure_data, free_port, start_server

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres@127.0.0.1:5432"
PER_MODEL = 50
API = "/api/2.0/mlflow"


def psql(*sql: str) -> None:
    for statement in sql:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", statement],
            capture_output=True,
            check=False,
        )


def call(port: int, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status} {payload[:300]!r}")
    return json.loads(payload or b"{}")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        todo.extend(int(child) for child in children)
    return found


def backends(db: str) -> list[int]:
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
         f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}'"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [int(pid) for pid in out.split()]


def server_ticks(server: subprocess.Popen, db: str) -> dict[int, int]:
    """utime + stime of a server's processes and of its database's backends, by pid."""
    return cpu_ticks(process_tree(server.pid) + backends(db))


def cpu_ms(before: dict[int, int], after: dict[int, int], requests: int) -> float:
    """CPU per request in between; a process started meanwhile counts in full."""
    return cpu_seconds(before, after) * 1000 / requests


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def start_mlflow(mlflow: str, db: str, port: int, artifacts: str) -> subprocess.Popen:
    cmd = [
        mlflow, "server", "--backend-store-uri", f"postgresql+psycopg://{PG}/{db}",
        "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    # A session of its own: the server's worker processes stop with it (stop_group).
    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300  # the first start creates MLflow's schema
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("mlflow server did not answer /health")


def stop_group(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def mlflow_fill(port: int, model_ids: list[str]) -> tuple[list[str], list[float]]:
    """Registered models with PER_MODEL versions each, the last one aliased `production`;
    returns the names and the create-version latencies."""
    names, creates = [], []
    for name in model_ids:
        call(port, "POST", f"{API}/registered-models/create", {"name": name})
        for v in range(PER_MODEL):
            body = {"name": name, "source": f"s3://bench/{name}/{v}", "description": "benchmark"}
            create = functools.partial(call, port, "POST", f"{API}/model-versions/create", body)
            creates.append(timed(create))
        names.append(name)
        alias = {"name": name, "alias": "production", "version": str(PER_MODEL)}
        call(port, "POST", f"{API}/registered-models/alias", alias)
    return names, creates


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def compare(size: int, requests: int, mlflow: str, prefix: str) -> list[tuple[str, ...]]:
    n_models = max(1, size // PER_MODEL)
    clm_db, mlflow_db = f"{prefix}_clm_{size}", f"{prefix}_mlflow_{size}"
    # CLM: its own database, seeded and migrated in a child process (Django binds one database).
    seeded = subprocess.run(
        [sys.executable, __file__, "--seed-clm", clm_db, "--models", str(n_models)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.splitlines()[-1]  # fmt: skip
    token, clm_ids = json.loads(seeded)
    psql(f"DROP DATABASE IF EXISTS {mlflow_db}", f"CREATE DATABASE {mlflow_db}")
    artifacts = tempfile.mkdtemp(prefix="clm-bench-mlflow-")
    clm_port, mlflow_port = free_port(), free_port()
    os.environ["DATABASE_URL"] = f"postgres://{PG}/{clm_db}"
    clm = start_server(clm_port, 1)
    floor_port = free_port()
    floor = start_server(floor_port, 1, app="_floor:application")
    ml = start_mlflow(mlflow, mlflow_db, mlflow_port, artifacts)
    try:
        names, creates = mlflow_fill(mlflow_port, clm_ids)  # the same model names
        live = dict.fromkeys(names, PER_MODEL)
        search_one = urllib.parse.quote(f"name='{names[0]}'")

        def flip(model: str) -> int:
            live[model] = PER_MODEL - 1 if live[model] == PER_MODEL else PER_MODEL
            return live[model]

        clm_versions = dict.fromkeys(clm_ids, PER_MODEL)

        def clm_live(i: int) -> int:
            model = clm_ids[i % n_models]
            clm_versions[model] = PER_MODEL - 1 if clm_versions[model] == PER_MODEL else PER_MODEL
            return clm_versions[model]

        def clm_promote(i: int) -> object:
            body = {"model_id": clm_ids[i % n_models], "version": clm_live(i), "reason": "b"}
            return call(clm_port, "POST", "/clm/promote", body, token)

        def mlflow_alias(i: int) -> object:
            name = names[i % n_models]
            body = {"name": name, "alias": "production", "version": str(flip(name))}
            return call(mlflow_port, "POST", f"{API}/registered-models/alias", body)

        def clm_production(i: int) -> object:
            path = f"/clm/models/{clm_ids[i % n_models]}/production"
            return call(clm_port, "GET", path, None, token)

        def mlflow_by_alias(i: int) -> object:
            query = f"name={names[i % n_models]}&alias=production"
            return call(mlflow_port, "GET", f"{API}/registered-models/alias?{query}")

        def clm_search(i: int) -> object:
            return call(clm_port, "GET", "/clm/models?limit=20", None, token)

        def mlflow_search(i: int) -> object:
            return call(mlflow_port, "GET", f"{API}/model-versions/search?max_results=20")

        def clm_search_one(i: int) -> object:
            return call(clm_port, "GET", f"/clm/models/{clm_ids[0]}/versions?limit=20", None, token)

        def mlflow_search_one(i: int) -> object:
            path = f"{API}/model-versions/search?max_results=20&filter={search_one}"
            return call(mlflow_port, "GET", path)

        def floor_wsgi(i: int) -> object:
            return call(floor_port, "GET", "/floor/wsgi")

        def floor_drf(i: int) -> object:
            return call(floor_port, "GET", "/floor/drf", None, token)

        # (name, the server answering ours, ours, MLflow's)
        ops: list[tuple[str, subprocess.Popen, Callable[[int], object], Callable[[int], object]]]
        ops = [
            ("promote / set alias", clm, clm_promote, mlflow_alias),
            ("production read / get by alias", clm, clm_production, mlflow_by_alias),
            ("search, first 20 of all", clm, clm_search, mlflow_search),
            ("search, 20 of one model", clm, clm_search_one, mlflow_search_one),
            # The floor of CLM's stack (benchmarks/_floor.py) against MLflow's search: the
            # largest ratio any CLM search could reach.
            ("floor: plain WSGI / search", floor, floor_wsgi, mlflow_search),
            ("floor: DRF + token, no data / search", floor, floor_drf, mlflow_search),
        ]
        rows = [
            ("create version", "-", f"{p50(creates):.1f}", "-", f"{p95(creates):.1f}", "-", "-",
             "-", "-"),
        ]  # fmt: skip
        for name, ours_server, ours, theirs in ops:
            for i in range(10):  # warm both servers
                ours(i)
                theirs(i)
            a: list[float] = []
            b: list[float] = []
            cpu_before = server_ticks(ours_server, clm_db), server_ticks(ml, mlflow_db)
            for i in range(requests):
                a.append(timed(functools.partial(ours, i)))
                b.append(timed(functools.partial(theirs, i)))
            clm_cpu = cpu_ms(cpu_before[0], server_ticks(ours_server, clm_db), requests)
            ml_cpu = cpu_ms(cpu_before[1], server_ticks(ml, mlflow_db), requests)
            rows.append((
                name, f"{p50(a):.1f}", f"{p50(b):.1f}", f"{p95(a):.1f}", f"{p95(b):.1f}",
                f"{p50(b) / p50(a):.1f}x", f"{clm_cpu:.1f}", f"{ml_cpu:.1f}",
                f"{ml_cpu / clm_cpu:.1f}x" if clm_cpu else "-",
            ))  # fmt: skip
        return rows
    finally:
        floor.terminate()
        floor.wait(timeout=60)
        clm.terminate()
        stop_group(ml)
        clm.wait(timeout=60)
        shutil.rmtree(artifacts, ignore_errors=True)


def seed_clm(db: str, n_models: int) -> None:
    os.environ.update(ENV)
    sys.path.insert(0, str(Path(__file__).parent))
    from _django import setup

    setup(db)
    token = ensure_data(n_models, PER_MODEL, reseed=False)

    from registry.models import RegisteredModel

    print(json.dumps([token, list(RegisteredModel.objects.values_list("model_id", flat=True))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="200,2000", help="versions in each registry")
    parser.add_argument("--requests", type=int, default=100, help="per operation and server")
    parser.add_argument("--mlflow", default=shutil.which("mlflow") or "mlflow")
    parser.add_argument("--db-prefix", default=os.environ.get("CLM_BENCH_DB", "clm_bench"))
    parser.add_argument("--seed-clm", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_clm:
        seed_clm(args.seed_clm, args.models)
        return
    os.environ.update(ENV)
    version = subprocess.run([args.mlflow, "--version"], capture_output=True, text=True).stdout
    for size in (int(s) for s in args.sizes.split(",")):
        load = os.getloadavg()[0]
        rows = compare(size, args.requests, args.mlflow, args.db_prefix)
        print(
            f"\n{size:,} versions ({size // PER_MODEL} models), one worker each, {args.requests}"
            f" alternating requests per operation; {version.strip()}; load {load:.1f} ->"
            f" {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'operation':<38} {'CLM p50':>8} {'MLflow p50':>10} {'CLM p95':>8}"
            f" {'MLflow p95':>10} {'MLflow/CLM':>10} {'CLM cpu':>8} {'MLflow cpu':>10}"
            f" {'cpu ratio':>9}"
        )
        for row in rows:
            print(
                f"{row[0]:<38} {row[1]:>8} {row[2]:>10} {row[3]:>8} {row[4]:>10} {row[5]:>10}"
                f" {row[6]:>8} {row[7]:>10} {row[8]:>9}"
            )
        print("cpu: ms of CPU per request, the server's processes and their PostgreSQL backends")
        by_name = {row[0]: row for row in rows}
        alias, floor_row = (
            by_name["promote / set alias"],
            by_name["floor: DRF + token, no data / search"],
        )
        print(
            f"4x MLflow's set alias is {float(alias[2]) / 4:.1f} ms; 10x its search"
            f" {float(floor_row[2]) / 10:.1f} ms, and CLM's stack answers nothing, authenticated,"
            f" in {floor_row[1]} ms ({floor_row[5]} faster than that search)"
        )


if __name__ == "__main__":
    main()
