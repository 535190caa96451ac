"""The original CLM v3 paths (no trailing slash), as the contract with trading services."""

from django.urls import path

from registry.api import views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("clm/status", views.StatusView.as_view(), name="clm-status"),
    # POST clm/train lives with the trigger handlers (training.retraining.api.urls).
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
]
