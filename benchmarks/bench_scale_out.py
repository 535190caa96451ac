"""Throughput of four worker processes: the due-model scan and 200 short jobs, on each broker.

Runs the scaling test (tests/training/test_scale_out.py: four real `celery worker` processes,
-c 1 each, the test trainer, the full pipeline per job) once per broker and prints what it
measured: from the scan being sent to the last job finishing, and jobs per minute.

    .venv/bin/python benchmarks/bench_scale_out.py [--brokers rabbitmq,redis]

The environment gives the database and brokers as for the tests (DATABASE_URL,
CELERY_BROKER_URL, CLM_TEST_REDIS_BROKER_URL, CELERY_RESULT_BACKEND).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = (
    "tests/training/test_scale_out.py"
    "::test_four_workers_scan_and_train_200_models_each_exactly_once"
)


def run(broker: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "CLM_SCALE_REPORT": str(report), "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-m", "pytest", f"{TEST}[{broker}]", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, check=True,
        )  # fmt: skip
        return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="rabbitmq,redis")
    args = parser.parse_args()
    rows = [run(broker) for broker in args.brokers.split(",")]
    print("| broker | jobs | scan sent to last job done, s | jobs/min | first job to last, s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['broker']} | {row['jobs']} | {row['seconds']:.1f} | "
            f"{row['jobs'] / row['seconds'] * 60:.0f} | {row['job_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
