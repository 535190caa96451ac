"""Shadow testing, A/B experiments and automatic rollback (part of the original /clm contract)."""

from django.urls import path

from training.promotion.api import views

urlpatterns = [
    path("clm/shadow", views.ShadowListView.as_view(), name="clm-shadow"),
    path(
        "clm/shadow/<int:comparison_id>",
        views.ShadowDetailView.as_view(),
        name="clm-shadow-detail",
    ),
    path(
        "clm/shadow/<int:comparison_id>/curve.png",
        views.ShadowCurveView.as_view(),
        name="clm-shadow-curve",
    ),
    path(
        "clm/shadow/<int:comparison_id>/stop",
        views.ShadowStopView.as_view(),
        name="clm-shadow-stop",
    ),
    path("clm/experiments", views.ExperimentListView.as_view(), name="clm-experiments"),
    path(
        "clm/experiments/<int:experiment_id>",
        views.ExperimentDetailView.as_view(),
        name="clm-experiment",
    ),
    path(
        "clm/experiments/<int:experiment_id>/stop",
        views.ExperimentStopView.as_view(),
        name="clm-experiment-stop",
    ),
    path(
        "clm/models/<slug:model_id>/allocation",
        views.AllocationView.as_view(),
        name="clm-model-allocation",
    ),
    path(
        "clm/models/<slug:model_id>/results",
        views.ResultsView.as_view(),
        name="clm-model-results",
    ),
    path("clm/rollbacks", views.RollbackListView.as_view(), name="clm-rollbacks"),
]
