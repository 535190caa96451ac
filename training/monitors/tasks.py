"""Celery wrappers of the monitors, run by celery-beat (see setup_schedules)."""

from __future__ import annotations

from celery import shared_task

from training.monitors import services


@shared_task(name="training.monitor_drift")
def monitor_drift() -> dict[str, int]:
    return services.drift_monitor_run_all()


@shared_task(name="training.monitor_performance")
def monitor_performance() -> dict[str, int]:
    return services.performance_monitor_run_all()


@shared_task(name="training.monitor_regime")
def monitor_regime() -> dict[str, int]:
    return services.regime_monitor_run_all()
