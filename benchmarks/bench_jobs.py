"""Training jobs through real Celery workers: throughput on 1 and 2 workers, and a worker's memory.

throughput: `--jobs` XGBoost jobs (default 200) on 20,000 1h bars, first through one worker
process, then through two; each of 10 model lines always has one job queued or running (a line
takes one active job at a time), so a worker never waits for work. Prints jobs per minute and
the second worker's gain. `--threads` is each fit's XGBoost threads (the `n_jobs` parameter,
default 1: a worker process is one core, so the gain measures what a second worker adds; with
2, one worker's fits already use both cores and the second can only add what is not the fit).

memory: one worker process runs `--jobs` jobs (default 100) cycling through the six families at
small budgets (training.trainers.DEMO_PARAMS, shortened further); the peak RSS (VmHWM) of the
process that trains is read after the 10th job and after the last. A leak shows as growth
between the two; the first jobs pay for importing the libraries.

Needs the broker (CELERY_BROKER_URL), as the workers do:
  .venv/bin/python benchmarks/bench_jobs.py throughput [--jobs 200]
  .venv/bin/python benchmarks/bench_jobs.py memory [--jobs 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

from _django import setup
from bench_evolution import start_worker

N_BARS = 20_000
LINES = 10
# Small budgets: the point is what a long-lived worker keeps, not how well the models fit.
BUDGETS: dict[str, dict] = {
    "xgboost": {"n_estimators": 40},
    "lightgbm": {"n_estimators": 40},
    "nhits": {"max_steps": 10},
    "patchtst": {"max_steps": 8, "input_size": 64},
    "rl_v2": {"total_timesteps": 2_000},
    "rl_v3": {"total_timesteps": 2_000},
}


def bars_ensure(symbols: list[str]) -> None:
    from training.data.bars import bars_frame, bars_import
    from training.data.synthetic import generate_bars
    from training.models import Bar

    for i, symbol in enumerate(symbols):
        if Bar.objects.filter(symbol=symbol, timeframe="1h").count() != N_BARS:
            bars, _ = generate_bars(N_BARS, seed=10 + i, timeframe="1h")
            bars_import(frame=bars_frame(bars), symbol=symbol, timeframe="1h")


def job_create(model_type: str, symbol: str, params: dict) -> str:
    from django.db import transaction

    from registry.services import JobRequest, training_job_create

    with transaction.atomic():  # dispatched on commit, as an API request would
        job, _ = training_job_create(
            request=JobRequest(model_type=model_type, symbol=symbol, timeframe="1h", params=params)
        )
    return str(job.pk)


def finished(job_ids: list[str]) -> set[str]:
    from registry.models import JobStatus, TrainingJob

    done = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
    return {
        str(pk) for pk in TrainingJob.objects.filter(pk__in=job_ids, status__in=done)
        .values_list("pk", flat=True)
    }  # fmt: skip


def run_jobs(plan: list[tuple[str, str, dict]], *, per_line: int = 1) -> float:
    """Submit `plan` (model_type, symbol, params), one job in flight per model line; returns
    the seconds from the first submission to the last job finished."""
    waiting = list(plan)
    in_flight: dict[str, tuple[str, str]] = {}
    started = time.perf_counter()
    while waiting or in_flight:
        busy = set(in_flight.values())
        for item in list(waiting):
            line = (item[0], item[1])
            if line not in busy:
                in_flight[job_create(*item)] = line
                busy.add(line)
                waiting.remove(item)
        for job_id in finished(list(in_flight)):
            del in_flight[job_id]
        time.sleep(0.05)
    return time.perf_counter() - started


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def throughput(jobs: int, threads: int) -> None:
    symbols = [f"BENCHJOB{i}" for i in range(LINES)]
    bars_ensure(symbols)
    params = {"n_jobs": threads}
    plan = [("xgboost", symbols[i % LINES], params) for i in range(jobs)]
    results = {}
    for workers in (1, 2):
        procs = [start_worker(1)[0] for _ in range(workers)]
        try:
            run_jobs([("xgboost", s, params) for s in symbols[:2]])  # imports, connections
            results[workers] = run_jobs(plan)
        finally:
            for proc in procs:
                stop(proc)
    load = os.getloadavg()
    print(
        f"{jobs} XGBoost jobs ({threads} thread(s) a fit) on {N_BARS:,} 1h bars, "
        f"{os.cpu_count()} CPUs, load {load[0]:.1f}"
    )
    for workers, seconds in results.items():
        print(f"  {workers} worker(s): {seconds:7.1f} s, {jobs / seconds * 60:6.1f} jobs/min")
    print(f"  second worker's gain: {results[1] / results[2]:.2f}x")


def child_hwm_mib(worker: subprocess.Popen) -> float:
    """VmHWM of the worker's pool process (the one that trains), in MiB."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def memory(jobs: int) -> None:
    symbols = [f"BENCHJOB{i}" for i in range(LINES)]
    bars_ensure(symbols[:1])
    families = list(BUDGETS)
    plan = [
        (families[i % len(families)], symbols[0], BUDGETS[families[i % 6]]) for i in range(jobs)
    ]
    worker, _ = start_worker(1)
    try:
        seconds = run_jobs(plan[:10])
        after_10 = child_hwm_mib(worker)
        seconds += run_jobs(plan[10:])
        after_all = child_hwm_mib(worker)
    finally:
        stop(worker)
    print(f"{jobs} jobs of {len(families)} families ({seconds:.0f} s), one worker process:")
    print(f"  peak RSS after 10 jobs:  {after_10:7.0f} MiB")
    print(f"  peak RSS after {jobs} jobs: {after_all:7.0f} MiB ({after_all / after_10 - 1:+.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("throughput", "memory"))
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--threads", type=int, default=1, help="XGBoost threads a fit")
    args = parser.parse_args()
    setup(os.environ.get("CLM_BENCH_DB", "clm_bench_jobs"))
    if args.mode == "throughput":
        throughput(args.jobs or 200, args.threads)
    else:
        memory(args.jobs or 100)


if __name__ == "__main__":
    main()
