"""Pipeline step timings for one job, and the share of the job that is not fit or predict.

Run: .venv/bin/python benchmarks/bench_pipeline.py --model-type xgboost --bars 50000
     .venv/bin/python benchmarks/bench_pipeline.py --model-type lightgbm --bars 1000000 \
         --timeframe 1m
(peak RSS of the process is printed at the end: the worker-side memory of that job)
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import time
from typing import Any

from _django import setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-type", default="xgboost")
    parser.add_argument("--bars", type=int, default=50_000)
    parser.add_argument("--timeframe", default="1h")
    parser.add_argument("--param", action="append", default=[], help="key=value")
    parser.add_argument("--warm", action="store_true", help="run one job first, report the second")
    parser.add_argument("--profile", metavar="PATH", help="cProfile the reported job into PATH")
    args = parser.parse_args()
    setup(os.environ.get("CLM_BENCH_DB", "clm_bench_pipeline"))
    from clm_project.celery import limit_blas_threads

    limit_blas_threads()  # as in a worker process (CLM_WORKER_BLAS_THREADS)
    import json

    from training.data.bars import bars_frame, bars_import
    from training.data.synthetic import generate_bars
    from training.models import Bar

    symbol = f"PIPE{args.bars}"
    if Bar.objects.filter(symbol=symbol, timeframe=args.timeframe).count() != args.bars:
        bars, _ = generate_bars(args.bars, seed=3, timeframe=args.timeframe)
        bars_import(frame=bars_frame(bars), symbol=symbol, timeframe=args.timeframe)
        del bars
    from registry.models import TrainingJob
    from registry.services import JobRequest, training_job_create
    from training.pipeline import run_job

    params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    if args.warm:
        # A worker imports the ML library once; a first job pays that, later ones do not.
        warm, _ = training_job_create(
            request=JobRequest(
                model_type=args.model_type,
                symbol=symbol,
                timeframe=args.timeframe,
                params=params,
                window_end=None,
            ),
            dispatch=False,
        )
        run_job(job_id=str(warm.pk))
    job, _ = training_job_create(
        request=JobRequest(
            model_type=args.model_type, symbol=symbol, timeframe=args.timeframe, params=params
        ),
        dispatch=False,
    )
    from django.db import connection

    statements = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    profile = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    with connection.execute_wrapper(count):
        status = run_job(job_id=str(job.pk))
    total = time.perf_counter() - started
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    job = TrainingJob.objects.get(pk=job.pk)
    state = "warm worker" if args.warm else "cold process"
    print(f"{args.model_type} on {args.bars:,} {args.timeframe} bars ({state}): {status}")
    print(f"  job wall time        {total:8.3f} s")
    durations = job.step_durations
    for step, seconds in sorted(durations.items(), key=lambda kv: -kv[1]):
        print(f"  {step:<20} {seconds:8.3f} s  {seconds / total:6.1%}")
    # The model's own time: fitting, and predicting the validation and test windows.
    model = sum(
        durations.get(name, 0) for name in ("train.fit", "train.predict", "evaluate.predict")
    )
    print(f"  fit + predict        {model:8.3f} s  {model / total:6.1%}")
    print(f"  everything else      {total - model:8.3f} s  {(total - model) / total:6.1%}")
    steps = sum(seconds for step, seconds in durations.items() if "." not in step)
    # Claiming, reading the job and its policy, and completing it: outside every step.
    print(f"  between the steps    {total - steps:8.3f} s")
    print(f"  SQL statements       {len(statements):8d}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB (before the job: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
