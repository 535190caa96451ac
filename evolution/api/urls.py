"""Evolution endpoints under the original CLM v3 paths (no trailing slash).

Included before the registry's URLs, so GET /clm/candidates is served here.
"""

from django.urls import path

from evolution.api import views

urlpatterns = [
    path("clm/candidates", views.CandidateListView.as_view(), name="clm-candidates"),
    path("clm/candidates/top", views.CandidateTopView.as_view(), name="clm-candidates-top"),
    path(
        "clm/candidates/propose",
        views.CandidateProposeView.as_view(),
        name="clm-candidates-propose",
    ),
    path(
        "clm/candidates/crossover",
        views.CandidateCrossoverView.as_view(),
        name="clm-candidates-crossover",
    ),
    path(
        "clm/candidates/<str:candidate_id>",
        views.CandidateDetailView.as_view(),
        name="clm-candidate",
    ),
    path(
        "clm/candidates/<str:candidate_id>/select",
        views.CandidateSelectView.as_view(),
        name="clm-candidate-select",
    ),
    path(
        "clm/candidates/<str:candidate_id>/mutate",
        views.CandidateMutateView.as_view(),
        name="clm-candidate-mutate",
    ),
    path("clm/evolution/stats", views.StatsView.as_view(), name="clm-evolution-stats"),
    path("clm/evolution/runs", views.RunListCreateView.as_view(), name="clm-evolution-runs"),
    path(
        "clm/evolution/runs/<str:run_id>",
        views.RunDetailView.as_view(),
        name="clm-evolution-run",
    ),
    path(
        "clm/evolution/runs/<str:run_id>/stop",
        views.RunStopView.as_view(),
        name="clm-evolution-run-stop",
    ),
    path(
        "clm/evolution/runs/<str:run_id>/resume",
        views.RunResumeView.as_view(),
        name="clm-evolution-run-resume",
    ),
    path(
        "clm/evolution/runs/<str:run_id>/generations/<int:number>/front.<str:fmt>",
        views.FrontPictureView.as_view(),
        name="clm-evolution-front",
    ),
]
