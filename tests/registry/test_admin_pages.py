"""The registry admin as a model-registry UI: the model page, comparisons, readable figures."""

from __future__ import annotations

import pytest
from django.urls import reverse

from registry import display, selectors, services
from registry.models import ModelStatus, ModelVersion, RegisteredModel, TrainingJob
from tests.conftest import evaluation_add, version_add

pytestmark = pytest.mark.django_db

MODEL = "xgboost-btcusdt-1h"


@pytest.fixture
def history() -> list[ModelVersion]:
    """v1 promoted, v2 promoted over it, then a rollback to v1; v3 a candidate."""
    v1 = version_add(status=ModelStatus.PRODUCTION)
    v2 = version_add(sharpe=2.4)
    services.model_version_promote(model_id=MODEL, version=2, actor="alice", reason="better")
    services.model_version_rollback(
        model_id=MODEL, target_version=1, actor="bob", reason="v2 lost money", verify_artifact=False
    )
    v3 = version_add(sharpe=0.7, passed=False)
    return [ModelVersion.objects.get(pk=v.pk) for v in (v1, v2, v3)]


def test_figures_read_as_people_read_them():
    assert display.metric("max_drawdown", 0.1534) == "15.3 %"
    assert display.metric("sharpe", 3.6135623168773954) == "3.61"
    assert display.metric("profit_factor", None, infinite=True) == "∞"
    assert display.metric("trades", 1234) == "1,234"
    assert display.metric("dsr", 0.912) == "91.2 %"
    assert [display.metric_label(n) for n in ("cagr", "psr", "dsr")] == ["CAGR", "PSR", "DSR"]
    assert display.significant(0.0123456789) == "0.0123"


def test_production_history_reads_the_audit_log(history):
    changes = selectors.production_history(model_id=MODEL)

    assert [(c.version.version, c.previous and c.previous.version, c.action) for c in changes] == [
        (1, 2, "rollback"),
        (2, 1, "promote"),
        (1, None, "promote"),
    ]
    assert (changes[0].actor, changes[0].reason) == ("bob", "v2 lost money")


def test_model_page_shows_versions_history_and_links(admin_client, history):
    model = RegisteredModel.objects.get()
    page = admin_client.get(reverse("admin:registry_registeredmodel_change", args=[model.pk]))
    html = page.content.decode()

    assert page.status_code == 200
    assert html.count('class="version-row"') == 3
    assert '<th class="num">DSR</th>' in html and '<th class="num">Sharpe</th>' in html
    assert "2.40" in html and "8.0 %" in html and "56.0 %" in html  # Sharpe, drawdown, win rate
    assert "rolled back to" in html and "from v2" in html and "“v2 lost money”" in html
    assert "by alice: “better”" in html
    assert "Policies in force" in html and "Sharpe ≥ 1.00" in html  # the promotion app's
    assert "/admin/training/triggerrecord/train/?model_type=xgboost&amp;market=BTCUSDT%7C1h" in html
    assert reverse("admin:registry_modelversion_compare") in html
    assert f"?model__id__exact={model.pk}" in html  # the model's jobs


def test_model_list_shows_production_not_the_version_counter(admin_client, history):
    html = admin_client.get(reverse("admin:registry_registeredmodel_changelist")).content.decode()
    assert "next_version" not in html and ">v1</a>" in html
    assert 'href="?timeframe=1h"' in html and ">H1<" not in html


def test_compare_puts_versions_side_by_side(admin_client, history):
    _, v2, _ = history
    services.model_version_update_notes(version=v2, tags=["x"])
    ModelVersion.objects.filter(pk=v2.pk).update(params={"max_depth": 6, "eta": 0.1})
    url = reverse("admin:registry_modelversion_compare")

    page = admin_client.get(url, {"model": MODEL, "versions": "1,2"})
    html = page.content.decode()

    assert page.status_code == 200
    assert 'id="compare-metrics"' in html
    sharpe = '<tr class="differs"><th>Sharpe</th><td class="num">1.80</td><td class="num">2.40'
    assert sharpe in html
    assert '<tr class="differs"><th>max_depth</th><td>4</td><td>6</td>' in html
    assert '<tr class="differs"><th>eta</th><td>—</td><td>0.1</td>' in html
    assert '<tr class=""><th>lags</th>' in html  # the same feature spec, not highlighted


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"model": MODEL, "versions": "1"}, "Pick 2 to 4 versions"),
        ({"model": MODEL, "versions": "1,2,3,4,5"}, "Pick 2 to 4 versions"),
        ({"model": MODEL, "versions": "1,x"}, "positive whole numbers"),
        ({"model": MODEL, "versions": "1,9"}, "has no version 9"),
        ({"model": "nope", "versions": "1,2"}, "unknown model"),
    ],
)
def test_bad_comparisons_are_messages(admin_client, history, query, message):
    response = admin_client.get(reverse("admin:registry_modelversion_compare"), query, follow=True)
    assert response.status_code == 200
    assert any(message in str(m) for m in response.context["messages"])


def test_compare_action_needs_one_model_and_two_to_four(admin_client, history):
    other = version_add(symbol="ETHUSDT")
    url = reverse("admin:registry_modelversion_changelist")
    ok = admin_client.post(
        url, {"action": "compare_selected", "_selected_action": [history[0].pk, history[2].pk]}
    )
    mixed = admin_client.post(
        url,
        {"action": "compare_selected", "_selected_action": [history[0].pk, other.pk]},
        follow=True,
    )
    assert ok.status_code == 302 and ok["Location"].endswith(f"?model={MODEL}&versions=1%2C3")
    assert any("of one model" in str(m) for m in mixed.context["messages"])


def test_jobs_are_titled_and_timed(admin_client):
    job, _ = services.training_job_create(
        request=services.JobRequest(model_type="xgboost", symbol="BTCUSDT", timeframe="1h"),
        dispatch=False,
    )
    assert str(job) == f"{MODEL} job {str(job.pk)[:8]} (manual, pending)"
    from datetime import timedelta

    from django.utils import timezone

    TrainingJob.objects.filter(pk=job.pk).update(
        status="in_progress", started_at=timezone.now() - timedelta(seconds=185)
    )
    html = admin_client.get(reverse("admin:registry_trainingjob_changelist")).content.decode()
    assert "3 min 05 s so far" in html or "3 min 06 s so far" in html


def test_view_site_leads_to_the_api(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert 'href="/api/docs/"' in html
    assert admin_client.get("/api/docs/").status_code == 200


def test_evaluation_list_shows_percentages(admin_client):
    evaluation_add(version=version_add(passed=None, status="training"), max_drawdown=0.1534)
    html = admin_client.get(reverse("admin:registry_evaluationresult_changelist")).content.decode()
    assert "15.3 %" in html and "0.1534" not in html


def test_a_jobs_page_reads_as_people_read_it(admin_client):
    job, _ = services.training_job_create(
        request=services.JobRequest(model_type="xgboost", symbol="BTCUSDT", timeframe="1h"),
        dispatch=False,
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        progress=0.15, step="fetch_data", step_durations={"start": 0.0123, "fetch_data": 1.98765}
    )
    html = admin_client.get(reverse("admin:registry_trainingjob_change", args=[job.pk]))
    page = html.content.decode()
    assert html.status_code == 200
    assert f"<title>{MODEL} job {str(job.pk)[:8]} (manual, pending)" in page
    assert '<progress max="100" value="15"' in page
    assert "<th>fetch_data</th><td>1.99 s</td>" in page and "1.98765" not in page


def test_version_page_shows_every_window_of_its_split(admin_client):
    version = version_add()
    windows = {
        name: {"rows": rows, "first": f"2024-01-{day:02d}T00:00:00+00:00", "last": "…"}
        for name, rows, day in (
            ("train", [199, 1_000], 9), ("purge", [1_000, 1_004], 18),
            ("validation", [1_004, 1_364], 19), ("test_purge", [1_364, 1_368], 27),
            ("test", [1_368, 1_818], 28),
        )
    }  # fmt: skip
    manifest = {"windows": windows, "search_seen_until": "2024-01-27T10:00:00+00:00"}
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest)

    page = admin_client.get(reverse("admin:registry_modelversion_change", args=[version.pk]))
    html = page.content.decode()

    assert page.status_code == 200
    assert "<th>validation</th><td>rows 1004 to 1363</td>" in html
    assert "<th>test</th><td>rows 1368 to 1817</td><td>2024-01-28T00:00:00+00:00 to" in html
    assert "selection: early stopping, calibration, fitness, shadow pre-check" in html
    assert "Tested after the last bar its search saw: 2024-01-27T10:00:00+00:00" in html
    assert "<th>Test window</th>" in html
