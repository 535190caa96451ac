"""Event endpoints (POST) and reads of triggers, monitor results and the schedule (GET)."""

from django.urls import path

from training.retraining.api import train_views, views

urlpatterns = [
    path("clm/train", train_views.TrainView.as_view(), name="clm-train"),
    path("clm/events/drift_detected", views.DriftDetectedView.as_view(), name="clm-event-drift"),
    path(
        "clm/events/performance_degraded",
        views.PerformanceDegradedView.as_view(),
        name="clm-event-performance",
    ),
    path("clm/events/regime_change", views.RegimeChangeView.as_view(), name="clm-event-regime"),
    path(
        "clm/events/manual_training",
        views.ManualTrainingView.as_view(),
        name="clm-event-manual",
    ),
    path("clm/triggers", views.TriggerListView.as_view(), name="clm-triggers"),
    path("clm/monitors/drift", views.DriftReportListView.as_view(), name="clm-monitor-drift"),
    path(
        "clm/monitors/performance",
        views.PerformanceReportListView.as_view(),
        name="clm-monitor-performance",
    ),
    path("clm/monitors/regime", views.RegimeStateListView.as_view(), name="clm-monitor-regime"),
    path("clm/schedule", views.ScheduleView.as_view(), name="clm-schedule"),
]
