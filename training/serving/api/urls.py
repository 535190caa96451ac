"""The registered model as a resource, versions compared, positions for trading services."""

from django.urls import path

from training.serving.api import model_views, views

urlpatterns = [
    path("clm/models/<slug:model_id>", model_views.ModelDetailView.as_view(), name="clm-model"),
    path(
        "clm/models/<slug:model_id>/compare",
        model_views.CompareView.as_view(),
        name="clm-model-compare",
    ),
    path("clm/models/<slug:model_id>/signal", views.SignalView.as_view(), name="clm-model-signal"),
    path(
        "clm/models/<slug:model_id>/predict",
        views.PredictView.as_view(),
        name="clm-model-predict",
    ),
]
