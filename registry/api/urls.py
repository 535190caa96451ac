"""The original CLM v3 paths (no trailing slash), as the contract with trading services."""

from django.urls import path

from registry.api import lifecycle_views, views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("clm/status", views.StatusView.as_view(), name="clm-status"),
    # POST clm/train lives with the trigger handlers (training.api.urls).
    path("clm/jobs", views.JobListView.as_view(), name="clm-jobs"),
    path("clm/jobs/<str:job_id>", views.JobDetailView.as_view(), name="clm-job"),
    path("clm/jobs/<str:job_id>/cancel", views.JobCancelView.as_view(), name="clm-job-cancel"),
    path("clm/models", views.ModelVersionListView.as_view(), name="clm-models"),
    path(
        "clm/models/<slug:model_id>/versions",
        views.ModelVersionsOfModelView.as_view(),
        name="clm-model-versions",
    ),
    path(
        "clm/models/<slug:model_id>/versions/<int:version>",
        views.ModelVersionDetailView.as_view(),
        name="clm-model-version",
    ),
    path(
        "clm/models/<slug:model_id>/versions/<int:version>/audit",
        views.ModelVersionAuditView.as_view(),
        name="clm-model-version-audit",
    ),
    path(
        "clm/models/<slug:model_id>/versions/<int:version>/artifact",
        views.ArtifactView.as_view(),
        name="clm-model-version-artifact",
    ),
    path(
        "clm/models/<slug:model_id>/production",
        views.ProductionView.as_view(),
        name="clm-model-production",
    ),
    path("clm/promote", views.PromoteView.as_view(), name="clm-promote"),
    path("clm/rollback", views.RollbackView.as_view(), name="clm-rollback"),
    path("clm/evaluations", views.EvaluationListView.as_view(), name="clm-evaluations"),
    path(
        "clm/evaluations/<int:evaluation_id>/equity.png",
        views.EvaluationEquityCurveView.as_view(),
        name="clm-evaluation-equity",
    ),
    path(
        "clm/models/<slug:model_id>/versions/<int:version>/equity.png",
        views.ModelVersionEquityCurveView.as_view(),
        name="clm-model-version-equity",
    ),
    path("clm/events", views.EventListView.as_view(), name="clm-events"),
    # Shadow testing, A/B experiments and automatic rollback.
    path("clm/shadow", lifecycle_views.ShadowListView.as_view(), name="clm-shadow"),
    path(
        "clm/shadow/<int:comparison_id>",
        lifecycle_views.ShadowDetailView.as_view(),
        name="clm-shadow-detail",
    ),
    path(
        "clm/shadow/<int:comparison_id>/curve.png",
        lifecycle_views.ShadowCurveView.as_view(),
        name="clm-shadow-curve",
    ),
    path(
        "clm/shadow/<int:comparison_id>/stop",
        lifecycle_views.ShadowStopView.as_view(),
        name="clm-shadow-stop",
    ),
    path("clm/experiments", lifecycle_views.ExperimentListView.as_view(), name="clm-experiments"),
    path(
        "clm/experiments/<int:experiment_id>",
        lifecycle_views.ExperimentDetailView.as_view(),
        name="clm-experiment",
    ),
    path(
        "clm/experiments/<int:experiment_id>/stop",
        lifecycle_views.ExperimentStopView.as_view(),
        name="clm-experiment-stop",
    ),
    path(
        "clm/models/<slug:model_id>/allocation",
        lifecycle_views.AllocationView.as_view(),
        name="clm-model-allocation",
    ),
    path(
        "clm/models/<slug:model_id>/results",
        lifecycle_views.ResultsView.as_view(),
        name="clm-model-results",
    ),
    path("clm/rollbacks", lifecycle_views.RollbackListView.as_view(), name="clm-rollbacks"),
]
