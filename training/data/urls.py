"""Market data over HTTP: batches of bars in, coverage and series out."""

from django.urls import path

from training.data import api

urlpatterns = [
    path("clm/bars", api.BarsView.as_view(), name="clm-bars"),
    path(
        "clm/bars/<str:symbol>/<str:timeframe>", api.BarSeriesView.as_view(), name="clm-bar-series"
    ),
]
