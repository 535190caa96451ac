"""Registry services: version numbers, lifecycle rules, audit rows and the outbox."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from clm_project.exceptions import DomainError, InvalidInput, NotFound
from registry import selectors, services
from registry.artifacts import artifact_save, artifact_storage
from registry.models import (
    EventType,
    JobStatus,
    LifecycleAction,
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    TrainingJob,
)
from tests.conftest import version_add

pytestmark = pytest.mark.django_db

MODEL = "xgboost-btcusdt-1h"


def _status(version: ModelVersion) -> str:
    version.refresh_from_db()
    return version.status


def _events(event_type: str) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(event_type=event_type).order_by("created_at"))


# ---------------------------------------------------------------------------------------------
# Versions


def test_version_numbers_count_up_per_model_from_one():
    numbers = [version_add().version for _ in range(3)]
    other = version_add(symbol="ETHUSDT")

    assert numbers == [1, 2, 3]
    assert other.version == 1
    assert selectors.registered_model_get(model_id=MODEL).next_version == 4


def test_register_writes_audit_row_and_model_trained_event():
    version = version_add(status=ModelStatus.TRAINING, passed=None)

    row = LifecycleEvent.objects.get(version=version)
    assert (row.action, row.from_status, row.to_status) == ("register", "", "training")
    [event] = _events(EventType.MODEL_TRAINED)
    assert event.model_id == MODEL
    assert event.payload["version"] == 1


def test_model_id_is_a_readable_slug():
    version = version_add(model_type="rl_v3", symbol="eth-usdt", timeframe="4h")
    assert version.model.model_id == "rl-v3-eth-usdt-4h"
    assert version.model.symbol == "ETH-USDT"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("model_type", {"model_type": "catboost"}),
        ("timeframe", {"timeframe": "2h"}),
        ("symbol", {"symbol": "BTC/USDT"}),
    ],
)
def test_registered_model_rejects_bad_input(field, kwargs):
    args = {"model_type": "xgboost", "symbol": "BTCUSDT", "timeframe": "1h", **kwargs}
    with pytest.raises(InvalidInput) as err:
        services.registered_model_get_or_create(**args)
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------
# Promote


def test_promote_makes_production_with_audit_and_event():
    version = version_add()

    services.model_version_promote(model_id=MODEL, version=1, actor="alice", reason="good")

    version.refresh_from_db()
    assert version.status == ModelStatus.PRODUCTION
    assert version.promoted_at is not None
    row = version.audit.get(action=LifecycleAction.PROMOTE)
    assert (row.from_status, row.to_status, row.actor, row.reason) == (
        "candidate",
        "production",
        "alice",
        "good",
    )
    [event] = _events(EventType.MODEL_PROMOTED)
    assert event.payload == {
        "version": 1,
        "previous_version": None,
        "actor": "alice",
        "reason": "good",
        "promoted_by": "alice",
    }


def test_promote_retires_the_previous_production_version():
    old = version_add(status=ModelStatus.PRODUCTION)
    new = version_add()

    services.model_version_promote(model_id=MODEL, version=new.version, actor="alice")

    old.refresh_from_db()
    assert old.status == ModelStatus.RETIRED
    assert old.retired_at is not None
    retire = old.audit.get(action=LifecycleAction.RETIRE)
    assert (retire.from_status, retire.to_status) == ("production", "retired")
    assert "replaced by v2" in retire.reason
    assert _status(new) == ModelStatus.PRODUCTION
    assert ModelVersion.objects.filter(status=ModelStatus.PRODUCTION).count() == 1
    assert _events(EventType.MODEL_PROMOTED)[-1].payload["previous_version"] == 1


@pytest.mark.parametrize("status", [ModelStatus.FAILED, ModelStatus.TRAINING])
def test_promote_refuses_failed_or_training_versions(status):
    version = version_add(status=status)

    with pytest.raises(DomainError, match=f"it is {status}"):
        services.model_version_promote(model_id=MODEL, version=1, actor="alice")

    assert _status(version) == status
    assert not _events(EventType.MODEL_PROMOTED)


def test_promote_refuses_the_current_production_version():
    version_add(status=ModelStatus.PRODUCTION)
    with pytest.raises(DomainError, match="already in production"):
        services.model_version_promote(model_id=MODEL, version=1, actor="alice")


def test_promote_refuses_retired_version_that_never_proved_itself():
    version = version_add(status=ModelStatus.RETIRED, passed=False)
    with pytest.raises(DomainError, match="retired without"):
        services.model_version_promote(model_id=MODEL, version=version.version, actor="alice")


def test_promote_unknown_model_or_version_is_not_found():
    version_add()
    with pytest.raises(NotFound):
        services.model_version_promote(model_id="nope-x-1h", version=1, actor="alice")
    with pytest.raises(NotFound):
        services.model_version_promote(model_id=MODEL, version=9, actor="alice")


# ---------------------------------------------------------------------------------------------
# Rollback


def test_rollback_restores_an_earlier_production_version():
    first = version_add(status=ModelStatus.PRODUCTION)
    second = version_add(status=ModelStatus.PRODUCTION)

    services.model_version_rollback(
        model_id=MODEL, target_version=1, actor="bob", reason="v2 misbehaves"
    )

    assert (_status(first), _status(second)) == (ModelStatus.PRODUCTION, ModelStatus.RETIRED)
    row = first.audit.get(action=LifecycleAction.ROLLBACK)
    assert (row.from_status, row.to_status, row.actor) == ("retired", "production", "bob")
    [event] = _events(EventType.MODEL_ROLLBACK)
    assert event.payload["version"] == 1
    assert event.payload["from_version"] == 2


def test_rollback_to_a_passed_version_that_was_never_production():
    version_add(status=ModelStatus.PRODUCTION)
    target = version_add(status=ModelStatus.CANDIDATE, passed=True)

    services.model_version_rollback(model_id=MODEL, target_version=target.version, actor="bob")

    assert _status(target) == ModelStatus.PRODUCTION


def test_rollback_refusals():
    version_add(status=ModelStatus.PRODUCTION)
    unproven = version_add(status=ModelStatus.CANDIDATE, passed=False)
    failed = version_add(status=ModelStatus.FAILED)

    with pytest.raises(NotFound):
        services.model_version_rollback(model_id=MODEL, target_version=99, actor="bob")
    with pytest.raises(DomainError, match="current production"):
        services.model_version_rollback(model_id=MODEL, target_version=1, actor="bob")
    with pytest.raises(DomainError, match="never in production"):
        services.model_version_rollback(
            model_id=MODEL, target_version=unproven.version, actor="bob"
        )
    with pytest.raises(DomainError, match="failed"):
        services.model_version_rollback(model_id=MODEL, target_version=failed.version, actor="b")
    assert not _events(EventType.MODEL_ROLLBACK)


def test_rollback_refuses_a_target_whose_artifact_changed():
    stored = artifact_save(model_id=MODEL, blob=b"model bytes v1")
    version_add(status=ModelStatus.PRODUCTION, artifact=stored)
    version_add(status=ModelStatus.PRODUCTION)
    with artifact_storage().open(stored.path, "wb") as handle:
        handle.write(b"tampered")

    with pytest.raises(DomainError, match="artifact unverifiable"):
        services.model_version_rollback(model_id=MODEL, target_version=1, actor="bob")
    artifact_storage().delete(stored.path)


# ---------------------------------------------------------------------------------------------
# Atomicity and history


def test_change_and_its_records_commit_together_or_not_at_all():
    version = version_add()
    audit_before = LifecycleEvent.objects.count()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.model_version_promote(model_id=MODEL, version=1, actor="alice")
        raise RuntimeError("the caller fails after the promotion, in the same transaction")

    assert _status(version) == ModelStatus.CANDIDATE
    assert LifecycleEvent.objects.count() == audit_before
    assert not _events(EventType.MODEL_PROMOTED)


def test_a_failing_event_write_undoes_the_promotion():
    live = version_add(status=ModelStatus.PRODUCTION)
    version = version_add()
    audit_before = LifecycleEvent.objects.count()
    with connection.cursor() as cursor:  # the database refuses the event (undone with the test)
        cursor.execute(
            "ALTER TABLE registry_outboxevent ADD CONSTRAINT refuse_promotions"
            " CHECK (event_type <> 'model_promoted') NOT VALID"
        )
    with pytest.raises(IntegrityError):
        services.model_version_promote(model_id=MODEL, version=version.version, actor="alice")

    assert _status(version) == ModelStatus.CANDIDATE
    assert _status(live) == ModelStatus.PRODUCTION
    assert LifecycleEvent.objects.count() == audit_before


def test_production_version_at_follows_promotions_and_rollbacks():
    version_add()
    version_add()
    before = timezone.now()
    services.model_version_promote(model_id=MODEL, version=1, actor="a")
    after_first = timezone.now()
    services.model_version_promote(model_id=MODEL, version=2, actor="a")
    after_second = timezone.now()
    services.model_version_rollback(model_id=MODEL, target_version=1, actor="a")
    after_rollback = timezone.now()
    services.model_version_set_status(
        model_id=MODEL, version=1, status=ModelStatus.RETIRED, actor="a"
    )
    after_retire = timezone.now()

    def live(at):
        found = selectors.production_version_at(model_id=MODEL, at=at)
        return found.version if found else None

    assert [live(t) for t in (before, after_first, after_second, after_rollback)] == [
        None,
        1,
        2,
        1,
    ]
    assert live(after_retire) is None


# ---------------------------------------------------------------------------------------------
# Status moves and training jobs


def test_set_status_follows_the_allowed_moves():
    version_add(status=ModelStatus.PRODUCTION)
    with pytest.raises(DomainError, match="cannot move"):
        services.model_version_set_status(
            model_id=MODEL, version=1, status=ModelStatus.CANDIDATE, actor="a"
        )
    with pytest.raises(InvalidInput):
        services.model_version_set_status(
            model_id=MODEL, version=1, status=ModelStatus.PRODUCTION, actor="a"
        )


def _job_request(**kwargs) -> services.JobRequest:
    return services.JobRequest(
        **{"model_type": "xgboost", "symbol": "BTCUSDT", "timeframe": "1h", **kwargs}
    )


def test_training_job_create_then_join_the_active_one():
    job, created = services.training_job_create(request=_job_request(), dispatch=False)
    again, created_again = services.training_job_create(
        request=_job_request(trigger_reason="drift_detected", trigger_context={"drift": 0.4}),
        dispatch=False,
    )

    assert (created, created_again) == (True, False)
    assert again.pk == job.pk
    assert again.joined_triggers[0]["trigger_reason"] == "drift_detected"
    assert TrainingJob.objects.count() == 1
    [event] = _events(EventType.TRAINING_JOB_CREATED)
    assert event.payload["job_id"] == str(job.pk)


def test_training_job_is_dispatched_to_the_broker_after_commit(
    django_capture_on_commit_callbacks, training_queue
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job, _ = services.training_job_create(request=_job_request())

    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert job.celery_task_id


def test_a_waiting_job_committed_after_its_active_job_ended_is_released_by_its_creator(
    django_capture_on_commit_callbacks,
):
    """The release after a job ends reads without a lock first, so it cannot see a waiting job
    still uncommitted then: the waiting job's own creation looks again after its commit."""
    active, _ = services.training_job_create(request=_job_request(), dispatch=False)
    with django_capture_on_commit_callbacks(execute=False) as after_commit:
        waiting, _ = services.training_job_create(
            request=_job_request(params={"max_depth": 5}, if_active="queue"), dispatch=False
        )
    assert waiting.status == JobStatus.WAITING
    # The active job ended before that commit; its release, before it too, found nothing.
    TrainingJob.objects.filter(pk=active.pk).update(status=JobStatus.COMPLETED)

    for callback in after_commit:
        callback()

    waiting.refresh_from_db()
    assert waiting.status == JobStatus.PENDING  # left for the caller to run (dispatch=False)


def test_training_job_cancel_only_while_waiting():
    job, _ = services.training_job_create(request=_job_request(), dispatch=False)

    services.training_job_cancel(job_id=job.pk, actor="carol")

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert "carol" in job.error_message
    with pytest.raises(DomainError, match="only waiting, pending or queued"):
        services.training_job_cancel(job_id=job.pk, actor="carol")


def test_registered_model_notes_update_keeps_the_version_counter():
    version_add()
    stale = selectors.registered_model_get(model_id=MODEL)
    version_add()  # bumps next_version to 3 behind `stale`'s back

    services.registered_model_update_notes(model=stale, description="BTC hourly", tags=["btc"])

    fresh = selectors.registered_model_get(model_id=MODEL)
    assert (fresh.description, fresh.tags, fresh.next_version) == ("BTC hourly", ["btc"], 3)
