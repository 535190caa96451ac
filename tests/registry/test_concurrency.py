"""Registry invariants under concurrent writers, on PostgreSQL with real transactions."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest
from django.db import connection

from clm_project.exceptions import DomainError, NotFound
from registry import selectors, services
from registry.models import (
    EventType,
    LifecycleAction,
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
)
from tests.conftest import version_add

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 16
MODEL = "xgboost-btcusdt-1h"


def _run_together(n: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run `work(i)` in n threads released at once; return what they raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_concurrent_registrations_get_numbers_without_gaps_or_duplicates():
    model = services.registered_model_get_or_create(
        model_type="xgboost", symbol="BTCUSDT", timeframe="1h"
    )
    per_thread = 5

    def register(_: int) -> None:
        for _ in range(per_thread):
            services.model_version_register(
                model=model, params={}, feature_spec={}, training_metrics={}, manifest={}
            )

    assert _run_together(THREADS, register) == []

    numbers = sorted(ModelVersion.objects.filter(model=model).values_list("version", flat=True))
    assert numbers == list(range(1, THREADS * per_thread + 1))
    model.refresh_from_db()
    assert model.next_version == THREADS * per_thread + 1


def test_concurrent_promotions_and_rollbacks_keep_exactly_one_production_version():
    for _ in range(6):
        version_add(status=ModelStatus.CANDIDATE, passed=True)
    services.model_version_promote(model_id=MODEL, version=1, actor="setup")
    model_pk = ModelVersion.objects.get(version=1).model_id
    audit_before = LifecycleEvent.objects.filter(
        action__in=[LifecycleAction.PROMOTE, LifecycleAction.ROLLBACK]
    ).count()

    done = threading.Event()
    violations: list[str] = []
    polls = [0]
    changes: list[int] = []

    def poll() -> None:
        try:
            while not done.is_set():
                count = ModelVersion.objects.filter(
                    model_id=model_pk, status=ModelStatus.PRODUCTION
                ).count()
                if count != 1:
                    violations.append(f"{count} production versions")
                try:
                    selectors.production_version_get(model_id=MODEL)
                except NotFound:
                    violations.append("no production version")
                polls[0] += 1
        finally:
            connection.close()

    def churn(i: int) -> None:
        rng = random.Random(i)
        for _ in range(6):
            target = rng.randint(1, 6)
            try:
                if rng.random() < 0.5:
                    services.model_version_promote(model_id=MODEL, version=target, actor=f"t{i}")
                else:
                    services.model_version_rollback(
                        model_id=MODEL, target_version=target, actor=f"t{i}"
                    )
            except DomainError as exc:  # the target was already live: a refusal, not a failure
                assert "production" in exc.message
            else:
                changes.append(target)

    poller = threading.Thread(target=poll)
    poller.start()
    errors = _run_together(THREADS, churn)
    done.set()
    poller.join(timeout=60)

    assert errors == []
    assert violations == []
    assert polls[0] > 10
    assert changes, "no promotion or rollback succeeded"
    live = ModelVersion.objects.filter(model_id=model_pk, status=ModelStatus.PRODUCTION)
    assert live.count() == 1
    # Every successful change left exactly one promote/rollback audit row.
    audit_after = LifecycleEvent.objects.filter(
        action__in=[LifecycleAction.PROMOTE, LifecycleAction.ROLLBACK]
    ).count()
    assert audit_after - audit_before == len(changes)
    last = (
        LifecycleEvent.objects.filter(to_status=ModelStatus.PRODUCTION)
        .order_by("-created_at", "-id")
        .first()
    )
    assert last.version_id == live.get().pk


def test_concurrent_retries_of_one_promotion_change_it_once():
    live = version_add(status=ModelStatus.PRODUCTION)
    target = version_add(status=ModelStatus.CANDIDATE)
    answers: list[bool] = []

    def promote(i: int) -> None:
        version, changed = services.model_version_promote_idempotent(
            model_id=MODEL, version=target.version, actor=f"t{i}"
        )
        assert version.status == ModelStatus.PRODUCTION
        answers.append(changed)

    assert _run_together(THREADS, promote) == []
    assert sorted(answers) == [False] * (THREADS - 1) + [True]
    audit = LifecycleEvent.objects.filter(
        action__in=[LifecycleAction.PROMOTE, LifecycleAction.RETIRE]
    )
    assert audit.filter(version=target, action=LifecycleAction.PROMOTE).count() == 1
    assert audit.filter(version=live, action=LifecycleAction.RETIRE).count() == 1
    assert OutboxEvent.objects.filter(event_type=EventType.MODEL_PROMOTED).count() == 2
