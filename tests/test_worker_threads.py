"""A worker process caps the BLAS thread pools (clm_project.celery.limit_blas_threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from celery.signals import worker_init, worker_process_init
from threadpoolctl import threadpool_info, threadpool_limits

from clm_project.celery import limit_blas_threads


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_the_worker_signals_cap_blas_threads_at_the_setting(settings) -> None:
    if not _blas_threads():
        pytest.skip("no BLAS library loaded that threadpoolctl can see")
    uids = {key[0] for key, _ in [*worker_init.receivers, *worker_process_init.receivers]}
    assert {"clm-blas-threads", "clm-blas-threads-pool"} <= uids
    with threadpool_limits(limits=None):  # restores the pools' sizes afterwards
        settings.CLM_WORKER_BLAS_THREADS = 1
        limit_blas_threads()
        assert _blas_threads() == {1}
        a = np.random.default_rng(0).normal(size=(200, 200))
        assert np.allclose(a @ np.linalg.inv(a), np.eye(200), atol=1e-8)


def test_openmp_threads_sleep_when_idle_unless_the_environment_says_otherwise() -> None:
    """Set before any model library loads its OpenMP runtime: on importing the project."""
    code = "import clm_project, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr
