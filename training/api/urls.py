"""Event endpoints (POST) and reads of triggers, monitor results and the schedule (GET)."""

from django.urls import path

from training.api import model_views, serving, train_views, views

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
    # The registered model as a resource, versions compared, positions for trading services.
    path("clm/models/<slug:model_id>", model_views.ModelDetailView.as_view(), name="clm-model"),
    path(
        "clm/models/<slug:model_id>/compare",
        model_views.CompareView.as_view(),
        name="clm-model-compare",
    ),
    path(
        "clm/models/<slug:model_id>/signal", serving.SignalView.as_view(), name="clm-model-signal"
    ),
    path(
        "clm/models/<slug:model_id>/predict",
        serving.PredictView.as_view(),
        name="clm-model-predict",
    ),
]
