"""One generation of 32 XGBoost candidates on 20,000 1h bars, on 1 and then 2 worker processes.

Prints the generation's wall time and speed-up, and the search's own overhead (NSGA-II ask/tell
and the database writes around it, plus each task's data loading and bookkeeping) against the
candidates' training and backtest time. Both passes evaluate the same 32 genomes (same seed).

Needs the broker and a result backend (the chord):
  CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/clm_h4 \
  CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/4 .venv/bin/python benchmarks/bench_evolution.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _django import ROOT, setup

DB_NAME = "clm_bench_evo"
SYMBOL = "BENCHEVO"
N_BARS = 20_000
POPULATION = 32
SEED = 42


def start_worker(concurrency: int) -> tuple[subprocess.Popen, str]:
    from clm_project.celery import app

    hostname = f"bench-evo-{uuid.uuid4().hex[:6]}@localhost"
    log = open(Path(tempfile.gettempdir()) / f"{hostname.split('@')[0]}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "clm_project", "worker", "-Q", "training,default",
         "-c", str(concurrency), "-P", "prefork", "-n", hostname, "--without-gossip",
         "--without-mingle", "-l", "warning"],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early; see {log.name}")
        if app.control.ping(destination=[hostname], timeout=1.0):
            return proc, hostname
    proc.kill()
    raise RuntimeError(f"worker did not answer within 90 s; see {log.name}")


def one_generation(concurrency: int) -> dict[str, float]:
    from clm_project.celery import app
    from evolution import services
    from evolution.models import Generation, StrategyCandidate

    app.control.purge()
    worker, _ = start_worker(concurrency)
    try:
        started = time.perf_counter()
        run = services.evolution_run_create(
            request=services.RunRequest(
                model_type="xgboost", symbol=SYMBOL, timeframe="1h",
                population_size=POPULATION, generations=1, seed=SEED, requested_by="bench",
            )
        )  # fmt: skip
        generation = Generation.objects.get(run=run, number=1)
        while generation.status != "complete":
            time.sleep(0.1)
            generation.refresh_from_db()
        wall = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    rows = StrategyCandidate.objects.filter(run=run).values_list(
        "evaluation_seconds", "task_seconds", "evaluation_status"
    )
    evaluation = [e for e, _, s in rows if s == "evaluated"]
    tasks = [t for _, t, s in rows if s == "evaluated"]
    return {
        "wall": wall,
        "evaluated": len(evaluation),
        "failed": sum(1 for *_, s in rows if s == "failed"),
        "train_backtest": sum(evaluation),
        "median_candidate": statistics.median(evaluation),
        "task_overhead": sum(tasks) - sum(evaluation),
        "search": generation.search_seconds,
    }


def replay_cost() -> list[tuple[int, float]]:
    """Ask/tell cost of proposing the next generation after g stored ones (no training): the
    replay that rebuilds the algorithm from the database grows with the run's length."""
    import numpy as np

    from evolution import nsga
    from evolution.search_space import resolve_search_space

    space = resolve_search_space("xgboost")
    rng = np.random.default_rng(0)
    history: list[list[nsga.Scored]] = []
    timings = []
    for g in range(1, 51):
        started = time.perf_counter()
        _, children = nsga.step(
            space, pop_size=POPULATION, seed=SEED, history=history, propose_next=True
        )
        elapsed = time.perf_counter() - started
        if g in (1, 10, 25, 50):
            timings.append((g, elapsed))
        members = []
        for i, child in enumerate(children):
            metrics = {
                "sharpe": rng.normal(1, 1),
                "profit_factor": rng.uniform(0.5, 3),
                "max_drawdown": rng.uniform(0, 0.4),
                "trades": int(rng.integers(20, 200)),
            }
            F, G = nsga.objectives(metrics, min_trades=50)  # fmt: skip
            members.append(nsga.Scored(f"{g}-{i}", child.genome, F, G))
        history.append(members)
    return timings


def main() -> None:
    if not os.environ.get("CELERY_BROKER_URL"):
        sys.exit("set CELERY_BROKER_URL and CELERY_RESULT_BACKEND (see the docstring)")
    setup(DB_NAME)
    from training.data.bars import bars_frame, bars_import
    from training.data.synthetic import generate_bars
    from training.models import Bar

    if Bar.objects.filter(symbol=SYMBOL, timeframe="1h").count() != N_BARS:
        Bar.objects.filter(symbol=SYMBOL).delete()
        bars, _ = generate_bars(N_BARS, seed=3, timeframe="1h")
        bars_import(frame=bars_frame(bars), symbol=SYMBOL, timeframe="1h")
    print(f"{POPULATION} XGBoost candidates, {N_BARS:,} 1h bars, default search space, seed {SEED}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results = {}
    for concurrency in (1, 2):
        r = one_generation(concurrency)
        results[concurrency] = r
        print(
            f"{concurrency} worker process{'es' if concurrency > 1 else ''}: wall "
            f"{r['wall']:.1f} s; {r['evaluated']} evaluated, {r['failed']} failed; training + "
            f"backtest {r['train_backtest']:.1f} s summed (median {r['median_candidate']:.2f} s "
            f"per candidate); search (ask/tell + DB) {r['search']:.3f} s; per-task data load and "
            f"bookkeeping {r['task_overhead']:.2f} s summed; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
    one, two = results[1], results[2]
    print(f"speed-up with 2 worker processes: {one['wall'] / two['wall']:.2f}x")
    for label, r in (("1 worker", one), ("2 workers", two)):
        overhead = r["search"] + r["task_overhead"]
        print(
            f"{label}: search overhead {overhead:.2f} s = "
            f"{100 * overhead / r['train_backtest']:.1f} % of training time "
            f"(ask/tell + DB alone: {100 * r['search'] / r['train_backtest']:.2f} %)"
        )
    for generations, seconds in replay_cost():
        print(
            f"propose generation {generations + 1} after {generations} stored (replay + ask, "
            f"no DB): {1000 * seconds:.0f} ms"
        )


if __name__ == "__main__":
    main()
