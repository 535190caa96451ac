"""Evaluations annualise with the symbol's calendar, or with bars per year measured from bars."""

from __future__ import annotations

import math

import pytest

from registry.models import EvaluationResult, JobStatus
from registry.services import JobRequest, training_job_create
from training.models import Symbol
from training.pipeline import run_job

from .conftest import store_bars


def train(symbol: str) -> EvaluationResult:
    job, _ = training_job_create(
        request=JobRequest(
            model_type="xgboost", symbol=symbol, timeframe="1h",
            params={"n_estimators": 40, "max_depth": 3},
        ),
        dispatch=False,
    )  # fmt: skip
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    return EvaluationResult.objects.select_related("version").get(version__model__symbol=symbol)


@pytest.mark.django_db
def test_the_calendar_sets_periods_per_year_and_scales_sharpe_exactly(reader_client):
    store_bars("AUTOUSD", 3_000, seed=5)  # the same bars twice: one symbol left on auto,
    store_bars("FXUSD", 3_000, seed=5)  # the other one set to FX (24/5) in the admin
    Symbol.objects.create(symbol="FXUSD", calendar="fx")
    auto, fx = train("AUTOUSD"), train("FXUSD")
    assert auto.periods_per_year == 8_760  # continuous hourly bars: measured 8,760 a year
    assert auto.version.manifest["annualisation"] == {
        "periods_per_year": 8_760, "calendar": "auto", "basis": "measured",
    }  # fmt: skip
    assert fx.periods_per_year == 6_240
    assert fx.version.manifest["annualisation"]["basis"] == "calendar"
    # Same bars, same model, same per-bar returns: Sharpe and Sortino scale with sqrt(P), CAGR
    # is the same total return compounded over a different number of years.
    assert fx.total_return == pytest.approx(auto.total_return, rel=1e-12)
    assert fx.sharpe == pytest.approx(auto.sharpe * math.sqrt(6_240 / 8_760), rel=1e-9)
    assert fx.sortino == pytest.approx(auto.sortino * math.sqrt(6_240 / 8_760), rel=1e-9)
    n = fx.n_bars
    assert fx.cagr == pytest.approx((1 + fx.total_return) ** (6_240 / (n - 1)) - 1, rel=1e-9)
    assert fx.psr == pytest.approx(auto.psr, rel=1e-9)  # per-bar: no P in it
    shown = reader_client.get("/clm/evaluations").json()
    rows = shown["results"] if isinstance(shown, dict) else shown
    assert {r["id"]: r["periods_per_year"] for r in rows} == {auto.pk: 8_760, fx.pk: 6_240}


@pytest.mark.django_db
def test_live_figures_annualise_as_the_evaluations_do():
    """Shadow, experiments, rollback and the monitors take P from the same rule as the
    pipeline: the symbol's calendar, or bars per year measured over the newest stored year."""
    from training.data.selectors import stored_periods_per_year

    assert stored_periods_per_year(symbol="NONE", timeframe="1h") == 8_760  # no bars: 24/7
    store_bars("AUTOUSD", 3_000, seed=5)
    store_bars("FXUSD", 3_000, seed=5)
    Symbol.objects.create(symbol="FXUSD", calendar="fx")
    assert stored_periods_per_year(symbol="autousd", timeframe="1h") == 8_760
    assert stored_periods_per_year(symbol="FXUSD", timeframe="1h") == 6_240
    # Daily bars of a 24/7 market measure 365 a year; an hourly series with every other bar
    # missing measures half of 8,760.
    store_bars("DAYUSD", 400, seed=5, timeframe="1d")
    assert stored_periods_per_year(symbol="DAYUSD", timeframe="1d") == 365
    from training.models import Bar

    hourly = Bar.objects.filter(symbol="AUTOUSD", timeframe="1h").order_by("timestamp")
    odd = list(hourly.values_list("pk", flat=True)[1::2])
    Bar.objects.filter(pk__in=odd).delete()
    assert stored_periods_per_year(symbol="AUTOUSD", timeframe="1h") == pytest.approx(4_380, abs=2)
