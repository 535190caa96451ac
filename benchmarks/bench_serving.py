"""Signal latency and throughput through gunicorn, for a tree, a deep and an RL model.

Seeds (database `clm_bench_serving`, created on the first run, reused after) 6,000 synthetic hourly
bars of BENCH and one production version each of xgboost, nhits and rl_v3 (the demo's small
budgets, trained in-process through the pipeline), serves the project with gunicorn (sync workers,
production settings) and times GET /clm/models/{id}/signal with one client and with 8 (token auth,
a new connection per request). Then, in-process, the cost of computing one position from the
stored bars (what a request pays when the latest bar is new) per family.

Run: .venv/bin/python benchmarks/bench_serving.py [--requests 1000] [--workers 2] [--reseed]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _django import setup
from bench_registry import ENV, Result, ServerCPU, free_port, run, start_server

DB_NAME = "clm_bench_serving"
SYMBOL = "BENCH"
FAMILIES = ("xgboost", "nhits", "rl_v3")


def ensure_data(reseed: bool) -> str:
    """Bars and one production version per family; the benchmark user's API token."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from registry.models import ModelStatus, ModelVersion
    from registry.services import JobRequest, training_job_create
    from training.data.bars import bars_frame, bars_import
    from training.data.synthetic import generate_bars
    from training.models import Bar
    from training.pipeline import run_job
    from training.promotion.models import PromotionPolicy
    from training.trainers import DEMO_PARAMS

    if reseed or not Bar.objects.filter(symbol=SYMBOL).exists():
        bars, _ = generate_bars(6_000, seed=5)
        bars_import(frame=bars_frame(bars), symbol=SYMBOL, timeframe="1h")
    for family in FAMILIES:
        live = ModelVersion.objects.filter(
            model__model_type=family, model__symbol=SYMBOL, status=ModelStatus.PRODUCTION
        )
        if live.exists() and not reseed:
            continue
        # Lenient gates: the benchmark needs a production version, not a good one.
        PromotionPolicy.objects.update_or_create(
            model_type=family,
            defaults={"min_sharpe": -1e9, "min_win_rate": 0.0, "min_profit_factor": 0.0,
                      "max_drawdown": 1.0, "min_trades": 0, "auto_promote": True},
        )  # fmt: skip
        job, _ = training_job_create(
            request=JobRequest(
                model_type=family, symbol=SYMBOL, timeframe="1h", params=DEMO_PARAMS[family]
            ),
            dispatch=False,
        )
        started = time.perf_counter()
        print(f"training {family}: {run_job(job_id=str(job.pk))}", end="")
        print(f" in {time.perf_counter() - started:.0f} s")
    user, _ = User.objects.get_or_create(username="bench")
    return Token.objects.get_or_create(user=user)[0].key


def compute_cost(model_id: str, repeats: int) -> tuple[float, float, int]:
    """Median ms to read the bars a signal needs and compute its position (no caches); the
    share of it spent reading bars; the bars read."""
    from training.data.bars import bars_last
    from training.serving import services as serving

    version = serving.serving_version(model_id=model_id)
    loaded = serving.model_cache.get(version)
    totals, reads = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        bars = bars_last(SYMBOL, "1h", loaded.signal_bars)
        read = time.perf_counter()
        loaded.latest_position(bars)
        totals.append((time.perf_counter() - started) * 1000)
        reads.append((read - started) * 1000)
    return statistics.median(totals), statistics.median(reads), len(bars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000, help="per family and client count")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    os.environ.update(ENV)
    setup(DB_NAME)

    token = ensure_data(args.reseed)
    from registry.models import RegisteredModel

    model_ids = [RegisteredModel.make_model_id(family, SYMBOL, "1h") for family in FAMILIES]
    costs = {model_id: compute_cost(model_id, 20) for model_id in model_ids}

    port = free_port()
    server = start_server(port, args.workers)
    cpu = ServerCPU(server)
    results: list[Result] = []
    try:
        for model_id in model_ids:

            def signal(i: int, model_id: str = model_id) -> tuple[str, str, None]:
                return "GET", f"/clm/models/{model_id}/signal", None

            name = f"GET /clm/models/{model_id}/signal"
            run(port, token, name, signal, 40, 2, cpu)  # load the model in both workers
            for clients in (1, 8):
                results.append(run(port, token, name, signal, args.requests, clients, cpu))
    finally:
        server.terminate()
        server.wait(timeout=30)

    load = os.getloadavg()
    print(
        f"\nCLM signals: gunicorn -w {args.workers} (sync) on 127.0.0.1, {os.cpu_count()} CPUs,"
        f" load average {load[0]:.1f} {load[1]:.1f}"
    )
    print(
        f"{'scenario':<44} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'req/s':>8} {'cpu ms':>8}"
    )
    for result in results:
        print(result.row())
    print("cpu ms: CPU time per request of the gunicorn workers and their PostgreSQL backends")
    title = "a new latest bar: position computed (in-process)"
    print(f"\n{title:<52} {'ms':>6} {'of it bars':>10}")
    for model_id, (total, read, n_bars) in costs.items():
        print(f"{model_id + f' ({n_bars} bars)':<52} {total:>6.1f} {read:>10.1f}")


if __name__ == "__main__":
    main()
