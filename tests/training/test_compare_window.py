"""Versions re-run on one window (the API's comparison and the admin's curves): a version re-run
on its own window repeats its evaluation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from registry.models import ModelVersion
from tests.training.conftest import store_bars, train_versions
from training.evaluation.backtest import backtest
from training.serving.overview import versions_on_window

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions() -> list[ModelVersion]:
    store_bars("BTCUSDT", 2_500, seed=11)
    return train_versions(2, 4)


def test_each_version_on_the_newest_window(versions):
    window = versions[-1].latest_evaluation

    run = versions_on_window(model=window.version.model, versions=versions, window=window)

    assert run.errors == {} and run.reason == ""
    assert len(run.timestamps) == window.n_bars
    assert run.results[2].sharpe == pytest.approx(window.sharpe, abs=1e-9)
    assert run.results[2].trades == window.trades
    assert run.results[1].sharpe != pytest.approx(window.sharpe)
    held = backtest(run.close, [1.0] * len(run.close), fee=0.0, periods_per_year=8760)
    assert held.sharpe == pytest.approx(window.benchmark_sharpe, abs=1e-9)


def test_a_version_without_its_artifact_is_named(versions):
    v1, v2 = versions
    ModelVersion.objects.filter(pk=v1.pk).update(artifact_sha256="0" * 64)
    v1.refresh_from_db()
    run = versions_on_window(model=v1.model, versions=[v1, v2], window=v2.latest_evaluation)
    assert set(run.results) == {2}
    assert "sha256" in run.errors[1]


def test_the_compare_page_shows_curves_on_the_common_window(admin_client, versions):
    page = admin_client.get(
        reverse("admin:registry_modelversion_compare"),
        {"model": "xgboost-btcusdt-1h", "versions": "1,2"},
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="common-window"' in html and 'id="compare-curves"' in html
    assert "data:image/png;base64," in html
    assert 'id="compare-regimes"' in html and "Sharpe " in html  # the pipeline's regime slices
    assert '<tr class="differs"><th>max_depth</th><td>2</td><td>4</td></tr>' in html
