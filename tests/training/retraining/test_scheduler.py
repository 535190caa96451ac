"""The periodic scan, next training times, the scheduler status and the celery-beat entries."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from clm_project.celery import app as celery_app
from registry import services
from registry.models import JobStatus, TrainingJob
from training.models import RetrainPolicy, SchedulerScan, TriggerRecord
from training.retraining.scheduler import (
    SCHEDULES,
    due_models,
    get_next_training_times,
    periodic_scan,
    scheduler_status,
)

pytestmark = pytest.mark.django_db


def trained(model_type: str, symbol: str, *, hours_ago: float, status=JobStatus.COMPLETED):
    """A model line whose last job was created `hours_ago` hours ago."""
    job, _ = services.training_job_create(
        request=services.JobRequest(model_type=model_type, symbol=symbol, timeframe="1h"),
        dispatch=False,
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        status=status, created_at=timezone.now() - timedelta(hours=hours_ago)
    )
    return job


@pytest.fixture
def fleet(db):
    """Models on both sides of their type's interval, one never trained, one busy, one off."""
    trained("xgboost", "AAA", hours_ago=200)  # 168 h: due 32 h ago
    trained("xgboost", "BBB", hours_ago=100)  # due in 68 h
    trained("nhits", "CCC", hours_ago=200)  # 336 h: due in 136 h
    trained("rl_v3", "DDD", hours_ago=30)  # 24 h: due 6 h ago
    trained("lightgbm", "EEE", hours_ago=500, status=JobStatus.IN_PROGRESS)  # busy: never due
    trained("other", "FFF", hours_ago=500)  # "other" policy is off
    services.registered_model_get_or_create(model_type="lightgbm", symbol="GGG", timeframe="1h")
    RetrainPolicy.objects.filter(model_type="rl_v3").update(priority_periodic=8)


def test_due_models_follow_each_types_interval_and_priority(fleet):
    due = due_models()
    # rl_v3 first (priority 8), then the never-trained model, then the longest overdue.
    assert [e.model_id for e in due] == ["rl-v3-ddd-1h", "lightgbm-ggg-1h", "xgboost-aaa-1h"]
    assert due[0].interval_hours == 24 and due[0].priority == 8


def test_next_training_times_soonest_first(fleet):
    now = timezone.now()
    entries = {e.model_id: e for e in get_next_training_times(now=now)}
    order = [e.model_id for e in get_next_training_times(now=now)]
    assert order[0] == "lightgbm-ggg-1h"  # never trained: due now
    assert order[-1] == "other-fff-1h"  # periodic retraining off
    bbb = entries["xgboost-bbb-1h"]
    assert not bbb.due
    assert bbb.next_training_at == bbb.last_training_at + timedelta(hours=168)
    assert abs((bbb.next_training_at - now) - timedelta(hours=68)) < timedelta(minutes=1)
    assert entries["nhits-ccc-1h"].interval_hours == 336 and not entries["nhits-ccc-1h"].due
    assert entries["lightgbm-eee-1h"].active_job and not entries["lightgbm-eee-1h"].due
    assert not entries["other-fff-1h"].enabled and entries["other-fff-1h"].next_training_at is None


def test_a_version_without_a_job_counts_as_training(make_version):
    make_version(model_type="xgboost", symbol="HHH")  # registered straight through the services
    [entry] = get_next_training_times()
    assert entry.last_training_at is not None and not entry.due


def test_the_scan_queues_due_models_in_priority_order_up_to_its_cap(fleet):
    scan = periodic_scan(max_jobs=2)
    assert (scan.models_checked, scan.due, scan.created, scan.deferred) == (7, 3, 2, 1)
    periodic = TrainingJob.objects.filter(trigger_reason="periodic")
    assert sorted(periodic.values_list("model__model_id", flat=True)) == [
        "lightgbm-ggg-1h", "rl-v3-ddd-1h",
    ]  # fmt: skip
    records = TriggerRecord.objects.order_by("id")
    assert [(r.source, r.outcome, r.priority) for r in records] == [
        ("scheduler", "created", 8),
        ("scheduler", "created", 3),
    ]
    assert records[0].job.trigger_context["interval_hours"] == 24
    # The next scan picks up the one left over; the others now have active jobs.
    again = periodic_scan(max_jobs=2)
    assert (again.due, again.created, again.deferred) == (1, 1, 0)
    assert SchedulerScan.objects.count() == 2


def test_a_due_model_inside_its_budget_is_skipped_with_a_reason(db):
    trained("rl_v3", "DDD", hours_ago=30)
    RetrainPolicy.objects.filter(model_type="rl_v3").update(max_retrains_per_day=0)
    scan = periodic_scan()
    assert (scan.due, scan.created, scan.skipped) == (1, 0, 1)
    assert TriggerRecord.objects.get().code == "budget"


def test_scheduler_status_reports_scan_due_models_jobs_and_triggers(fleet):
    call_command("setup_schedules", stdout=io.StringIO())
    before = scheduler_status()
    assert before["last_scan"] is None and before["due_now"] == 3
    assert before["next_due"][0]["model_id"] == "lightgbm-ggg-1h"
    periodic_scan()
    status = scheduler_status()
    assert status["last_scan"]["created"] == 3 and status["due_now"] == 0
    assert status["jobs_last_24h_by_trigger"]["periodic"] == 3
    assert status["triggers_last_24h_by_outcome"] == {
        "created": 3, "joined": 0, "skipped": 0, "rejected": 0,
    }  # fmt: skip
    tasks = {t["task"]: t for t in status["periodic_tasks"]}
    assert tasks["training.relay_outbox"]["schedule"] == "every 5 seconds"
    assert tasks["training.reap_stuck_jobs"]["enabled"] is True


def test_get_schedule_lists_next_training_times(fleet, reader_client):
    body = reader_client.get("/clm/schedule").json()
    assert body["count"] == 7
    assert body["results"][0]["model_id"] == "lightgbm-ggg-1h"
    assert body["results"][0]["next_training_at"] is None and body["results"][0]["due"]
    due = reader_client.get("/clm/schedule?due=true&model_type=xgboost").json()
    assert [r["model_id"] for r in due["results"]] == ["xgboost-aaa-1h"]


def test_setup_schedules_is_idempotent_and_keeps_edits(db):
    call_command("setup_schedules", stdout=io.StringIO())
    tasks = {t.task: t for t in PeriodicTask.objects.all()}
    assert set(tasks) == {s.task for s in SCHEDULES} == {
        "training.scan_due_models", "training.monitor_drift", "training.monitor_performance",
        "training.monitor_regime", "training.relay_outbox", "training.reap_stuck_jobs",
        "evolution.reap_runs", "training.shadow_evaluate", "training.experiments_evaluate",
        "training.rollback_check",
    }  # fmt: skip
    relay = tasks["training.relay_outbox"]
    assert (relay.interval.every, relay.interval.period) == (5, "seconds")
    assert relay.queue == settings.CLM_DEFAULT_QUEUE == f"{settings.CLM_QUEUE_PREFIX}default"
    assert relay.expire_seconds == 5

    # A person slows the scan down and switches the regime monitor off in the admin.
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.filter(task="training.scan_due_models").update(interval=hourly)
    PeriodicTask.objects.filter(task="training.monitor_regime").update(enabled=False)
    call_command("setup_schedules", stdout=io.StringIO())
    assert PeriodicTask.objects.count() == len(SCHEDULES)
    assert PeriodicTask.objects.get(task="training.scan_due_models").interval == hourly
    assert not PeriodicTask.objects.get(task="training.monitor_regime").enabled

    call_command("setup_schedules", "--reset", stdout=io.StringIO())
    scan = PeriodicTask.objects.get(task="training.scan_due_models")
    assert (scan.interval.every, scan.interval.period) == (15, "minutes")
    assert PeriodicTask.objects.get(task="training.monitor_regime").enabled


def test_every_scheduled_task_is_registered_with_the_worker_app():
    celery_app.loader.import_default_modules()
    for entry in SCHEDULES:
        assert entry.task in celery_app.tasks, entry.task


def test_admin_pages_show_the_schedule_policies_and_records(fleet, admin_client):
    periodic_scan(max_jobs=1)
    pages = [
        "retrainpolicy", "triggerrecord", "driftreport", "performancereport", "regimestate",
        "schedulerscan", "scheduledmodel", "bar",
    ]  # fmt: skip
    for page in pages:
        response = admin_client.get(f"/admin/training/{page}/")
        assert response.status_code == 200, page
    schedule = admin_client.get("/admin/training/scheduledmodel/").content.decode()
    assert "Schedule: 2 due now, last scan" in schedule and "now (never trained)" in schedule
    assert "xgboost-aaa-1h" in schedule
    # Records are read-only; policies are edited here.
    assert admin_client.get("/admin/training/triggerrecord/add/").status_code == 403
    xgb = RetrainPolicy.objects.get(model_type="xgboost")
    form = admin_client.get(f"/admin/training/retrainpolicy/{xgb.pk}/change/")
    assert form.status_code == 200
    data = {
        field: getattr(xgb, field)
        for field in (
            "periodic_interval_hours", "drift_threshold", "psi_threshold", "ks_alpha",
            "drift_window_bars", "sharpe_threshold", "performance_window_bars", "cooldown_hours",
            "max_retrains_per_day", "priority_manual", "priority_performance", "priority_drift",
            "priority_regime", "priority_periodic",
        )
    }  # fmt: skip
    data.update(enabled="on", auto_train_on_drift="on", periodic_interval_hours=72)
    saved = admin_client.post(f"/admin/training/retrainpolicy/{xgb.pk}/change/", data)
    assert saved.status_code == 302, saved.content[:2000]
    xgb.refresh_from_db()
    assert xgb.periodic_interval_hours == 72 and not xgb.auto_train_on_performance
