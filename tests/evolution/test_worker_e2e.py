"""A run on a real Celery worker and broker: killed mid-generation, resumed, nothing lost or
evaluated twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from django.db import connection

from evolution import services
from evolution.models import EvaluationStatus, EvolutionRun, RunStatus, StrategyCandidate
from tests.conftest import _start_worker, _stop_worker
from tests.training.conftest import store_bars

from .conftest import SYMBOL, run_add

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Candidates slow enough (about a second each) to be caught mid-generation.
SLOW_SPACE = {
    "n_estimators": 800,
    "max_depth": {"low": 7, "high": 8},
    "early_stopping_rounds": 0,
    "calibration": "isotonic",
}


def _wait(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool processes at once, as when its host dies: no task gets
    to finish or report, and the broker requeues the unacknowledged message."""
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    for pid in [proc.pid, *map(int, found.stdout.split())]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _states(run: EvolutionRun) -> Counter:
    return Counter(
        StrategyCandidate.objects.filter(run=run).values_list("evaluation_status", flat=True)
    )


# A short heartbeat lease, so a dead worker's claim goes stale within seconds (60 s by default).
LEASE_S = 6


# On both brokers: RabbitMQ redelivers the dead worker's message at once, Redis only after its
# visibility timeout; either way the claim is handed back when its heartbeat goes stale.
@pytest.mark.parametrize("broker", ["rabbitmq", "redis"], indirect=True)
def test_a_worker_killed_mid_generation_then_resumed_loses_nothing(
    purge_queues, monkeypatch, settings
):
    monkeypatch.setenv("CLM_JOB_HEARTBEAT_INTERVAL", "1")  # the workers' environment
    monkeypatch.setenv("CLM_JOB_HEARTBEAT_TIMEOUT", str(LEASE_S))
    settings.CLM_JOB_HEARTBEAT_TIMEOUT = LEASE_S  # this process's resume
    store_bars(SYMBOL, 2_000, seed=7)
    db_name = connection.settings_dict["NAME"]
    first, _ = _start_worker(db_name)
    run = run_add(population_size=6, generations=2, search_space=SLOW_SPACE, dispatch=True)

    def mid_generation() -> bool:
        states = _states(run)
        return states[EvaluationStatus.EVALUATED] >= 1 and states[EvaluationStatus.RUNNING] >= 1

    try:
        _wait(mid_generation, timeout=120, what="a generation half done")
    finally:
        _kill_hard(first)
    in_flight = set(
        StrategyCandidate.objects.filter(
            run=run, evaluation_status=EvaluationStatus.RUNNING
        ).values_list("pk", flat=True)
    )
    # The dead worker's claims stop beating; once past the lease, resuming hands them back.
    time.sleep(LEASE_S + 1)
    services.evolution_run_resume(run_id=run.pk, actor="ops")

    second, _ = _start_worker(db_name)
    try:
        _wait(
            lambda: EvolutionRun.objects.get(pk=run.pk).status != RunStatus.RUNNING,
            timeout=300,
            what="the resumed run to finish",
        )
    finally:
        _stop_worker(second)

    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.error_message
    rows = StrategyCandidate.objects.filter(run=run).defer("oos_returns")
    by_generation = Counter(rows.values_list("generation__number", flat=True))
    assert by_generation == {1: 6, 2: 6}, "a candidate was lost or proposed twice"
    for number in (1, 2):
        indices = sorted(rows.filter(generation__number=number).values_list("index", flat=True))
        assert indices == list(range(6))
    assert set(rows.values_list("evaluation_status", flat=True)) == {EvaluationStatus.EVALUATED}
    attempts = dict(rows.values_list("pk", "attempts"))
    # The one interrupted (almost always one: candidates take about a second) is evaluated again.
    assert all(attempts[pk] == 2 for pk in in_flight)
    assert {n for pk, n in attempts.items() if pk not in in_flight} == {1}, "evaluated twice"
    assert run.generation_set.filter(status="complete").count() == 2
