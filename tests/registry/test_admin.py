"""The registry admin: pages render, notes are editable, status only moves through actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from registry import services
from registry.models import (
    EvaluationResult,
    JobStatus,
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    TrainingJob,
)
from tests.conftest import version_add
from training.promotion.models import PromotionPolicy

pytestmark = pytest.mark.django_db

MODEL = "xgboost-btcusdt-1h"
REGISTRY_MODELS = [
    RegisteredModel,
    ModelVersion,
    TrainingJob,
    EvaluationResult,
    LifecycleEvent,
    OutboxEvent,
    PromotionPolicy,
]


def _url(model: type, action: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def registry_rows() -> None:
    version_add(status=ModelStatus.PRODUCTION)
    version_add(status=ModelStatus.FAILED)
    services.training_job_create(
        request=services.JobRequest(model_type="xgboost", symbol="BTCUSDT", timeframe="1h"),
        dispatch=False,
    )
    PromotionPolicy.objects.create(model_type="xgboost")


@pytest.mark.parametrize("model", REGISTRY_MODELS, ids=lambda m: m.__name__)
def test_changelist_search_and_change_pages_render(admin_client, registry_rows, model):
    obj = model.objects.first()

    assert admin_client.get(_url(model, "changelist")).status_code == 200
    assert admin_client.get(_url(model, "changelist"), {"q": "btc"}).status_code == 200
    assert admin_client.get(_url(model, "change", obj.pk)).status_code == 200


def test_admin_can_create_api_tokens(admin_client):
    assert admin_client.get(reverse("admin:authtoken_tokenproxy_add")).status_code == 200


def test_version_status_is_read_only_and_notes_are_editable(admin_client, registry_rows):
    version = ModelVersion.objects.get(version=2)
    url = _url(ModelVersion, "change", version.pk)
    page = admin_client.get(url).content.decode()
    assert 'name="status"' not in page
    assert 'name="description"' in page
    # The latest evaluation's gates, once, with figures as people read them.
    assert page.count('class="clm-gates"') == 1
    assert "<th>Sharpe</th><td>1.80</td><td>≥ 1.00</td><td>✔</td>" in page
    assert "<th>Trades</th><td>80</td><td>≥ 50</td><td>✔</td>" in page
    assert "<th>Max drawdown</th><td>8.0 %</td>" in page and "<th>DSR</th><td>91.0 %</td>" in page

    response = admin_client.post(
        url,
        {
            "description": "the hourly BTC model",
            "tags": "btc, hourly, btc",
            "notes": "retrained after the halving",
            "status": ModelStatus.PRODUCTION,
            "evaluations-TOTAL_FORMS": 0,
            "evaluations-INITIAL_FORMS": 0,
            "audit-TOTAL_FORMS": 0,
            "audit-INITIAL_FORMS": 0,
            "shadow_comparisons-TOTAL_FORMS": 0,
            "shadow_comparisons-INITIAL_FORMS": 0,
            "experiment_arms-TOTAL_FORMS": 0,
            "experiment_arms-INITIAL_FORMS": 0,
        },
    )

    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == ModelStatus.FAILED
    assert (version.description, version.tags) == ("the hourly BTC model", ["btc", "hourly"])
    assert version.notes == "retrained after the halving"


def test_tags_are_typed_comma_separated_and_never_shown_as_json(admin_client, registry_rows):
    model = RegisteredModel.objects.get()
    services.registered_model_update_notes(model=model, tags=["btc", "hourly"])
    page = admin_client.get(_url(RegisteredModel, "change", model.pk)).content.decode()
    assert 'name="tags" value="btc, hourly"' in page

    too_long = admin_client.post(
        _url(RegisteredModel, "change", model.pk), {"tags": "x" * 51, "description": ""}
    )
    assert too_long.status_code == 200
    assert "Tags are at most 50 characters" in too_long.content.decode()
    model.refresh_from_db()
    assert model.tags == ["btc", "hourly"]


def test_model_notes_edit_keeps_the_version_counter(admin_client, registry_rows):
    model = RegisteredModel.objects.get()
    response = admin_client.post(
        _url(RegisteredModel, "change", model.pk),
        {"description": "BTC hourly", "tags": "btc", "notes": ""},
    )
    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.description, model.tags, model.next_version) == ("BTC hourly", ["btc"], 3)


def _act(client: Client, action: str, *versions: ModelVersion):
    return client.post(
        _url(ModelVersion, "changelist"),
        {"action": action, "_selected_action": [v.pk for v in versions]},
        follow=True,
    )


def _confirm(client: Client, action: str, version: ModelVersion, reason: str):
    return client.post(_url(ModelVersion, action, version.pk), {"reason": reason}, follow=True)


def test_promote_action_asks_for_confirmation_and_a_reason(admin_client, registry_rows):
    candidate = version_add()

    response = _act(admin_client, "promote_selected", candidate)

    assert response.redirect_chain[-1][0] == _url(ModelVersion, "promote", candidate.pk)
    page = response.content.decode()
    assert "goes from" in page and "<strong>v1</strong> to <strong>v3</strong>" in page
    assert 'id="confirm-metrics"' in page and "<th>Sharpe</th>" in page
    candidate.refresh_from_db()
    assert candidate.status == ModelStatus.CANDIDATE  # nothing happened yet

    blank = _confirm(admin_client, "promote", candidate, "  ")
    assert "Say why: the reason is recorded in the audit log." in blank.content.decode()
    candidate.refresh_from_db()
    assert candidate.status == ModelStatus.CANDIDATE

    done = _confirm(admin_client, "promote", candidate, "beats v1 on the last quarter")
    assert done.redirect_chain[-1][0] == _url(ModelVersion, "change", candidate.pk)
    candidate.refresh_from_db()
    assert candidate.status == ModelStatus.PRODUCTION
    row = candidate.audit.get(action="promote")
    assert (row.actor, row.reason) == ("admin", "beats v1 on the last quarter")
    assert ModelVersion.objects.get(version=1).status == ModelStatus.RETIRED
    event = OutboxEvent.objects.filter(event_type="model_promoted").order_by("-created_at")[0]
    assert event.payload["reason"] == "beats v1 on the last quarter"
    assert f"{MODEL} v3 is now in production." in _messages(done)


def test_promote_refusals_are_shown_on_the_confirmation_page(admin_client, registry_rows):
    failed = ModelVersion.objects.get(version=2)
    first = ModelVersion.objects.get(version=1)

    refused = _confirm(admin_client, "promote", failed, "try it")
    two = _act(admin_client, "promote_selected", failed, first)

    assert refused.status_code == two.status_code == 200
    assert "it is failed" in refused.content.decode()
    assert "Select exactly one version." in _messages(two)
    assert failed.audit.filter(action="promote").count() == 0


def test_rollback_goes_through_the_confirmation(admin_client, registry_rows):
    version_add(status=ModelStatus.PRODUCTION)
    first = ModelVersion.objects.get(version=1)

    asked = _act(admin_client, "rollback_to_selected", first)
    assert asked.redirect_chain[-1][0] == _url(ModelVersion, "rollback", first.pk)
    response = _confirm(admin_client, "rollback", first, "v3 loses money live")

    assert ModelVersion.objects.get(version=1).status == ModelStatus.PRODUCTION
    assert ModelVersion.objects.get(version=3).status == ModelStatus.RETIRED
    row = LifecycleEvent.objects.get(action="rollback", actor="admin")
    assert row.reason == "v3 loses money live"
    assert any("Rolled back" in m for m in _messages(response))
    current = _confirm(admin_client, "rollback", first, "again")
    assert "current production" in current.content.decode()


def test_lifecycle_actions_need_the_promote_permission(registry_rows):
    staff = User.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    client = Client()
    client.force_login(staff)
    url = _url(ModelVersion, "changelist")

    assert "promote_selected" not in client.get(url).content.decode()
    candidate = version_add()
    _act(client, "promote_selected", candidate)
    assert client.get(_url(ModelVersion, "promote", candidate.pk)).status_code == 403
    assert _confirm(client, "promote", candidate, "no right").status_code == 403
    candidate.refresh_from_db()
    assert candidate.status == ModelStatus.CANDIDATE

    staff.user_permissions.add(Permission.objects.get(codename="promote_modelversion"))
    assert "promote_selected" in client.get(url).content.decode()


@pytest.mark.parametrize(
    "model", [EvaluationResult, LifecycleEvent, OutboxEvent, TrainingJob], ids=lambda m: m.__name__
)
def test_records_are_read_only(admin_client, registry_rows, model):
    obj = model.objects.first()
    change = _url(model, "change", obj.pk)

    assert admin_client.get(_url(model, "add")).status_code == 403
    assert 'name="_save"' not in admin_client.get(change).content.decode()
    assert admin_client.post(change, {}).status_code == 403
    assert admin_client.post(_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_versions_and_models_are_never_added_or_deleted_by_hand(admin_client, registry_rows):
    for model in (ModelVersion, RegisteredModel):
        assert admin_client.get(_url(model, "add")).status_code == 403


def test_jobs_changelist_shows_progress_and_cancels(admin_client, registry_rows):
    job = TrainingJob.objects.get()
    TrainingJob.objects.filter(pk=job.pk).update(progress=0.4)

    page = admin_client.get(_url(TrainingJob, "changelist")).content.decode()
    assert '<progress max="100" value="40"' in page

    response = admin_client.post(
        _url(TrainingJob, "changelist"),
        {"action": "cancel_selected", "_selected_action": [job.pk]},
        follow=True,
    )
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert f"Cancelled job {job.pk}." in _messages(response)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_drawdown", "0"), ("max_drawdown", "1.5"), ("eval_fraction", "1"),
        ("validation_fraction", "0"), ("validation_fraction", "0.8"), ("fee", "-0.001"),
    ],
)  # fmt: skip
def test_policy_form_validates_ranges(admin_client, registry_rows, field, value):
    policy = PromotionPolicy.objects.get()
    data = {
        "model_type": "xgboost", "min_sharpe": 1.0, "min_win_rate": 0.52,
        "min_profit_factor": 1.3, "max_drawdown": 0.15, "min_trades": 50, "min_dsr": "",
        "auto_promote": "on", "fee": 0.0005, "eval_fraction": 0.25, "validation_fraction": 0.2,
        field: value,
    }  # fmt: skip

    response = admin_client.post(_url(PromotionPolicy, "change", policy.pk), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors.keys() == {field}


def test_policy_is_editable(admin_client, registry_rows):
    policy = PromotionPolicy.objects.get()
    data = {
        "model_type": "xgboost", "min_sharpe": 1.4, "min_win_rate": 0.55,
        "min_profit_factor": 1.5, "max_drawdown": 0.2, "min_trades": 40, "min_dsr": "0.9",
        "fee": 0.001, "eval_fraction": 0.3, "validation_fraction": 0.25,
    }  # fmt: skip

    assert admin_client.post(_url(PromotionPolicy, "change", policy.pk), data).status_code == 302
    policy.refresh_from_db()
    assert (policy.min_sharpe, policy.min_dsr, policy.auto_promote) == (1.4, 0.9, False)
    assert (policy.eval_fraction, policy.validation_fraction) == (0.3, 0.25)


def test_policy_regime_gate_takes_both_settings_or_neither(admin_client, registry_rows):
    policy = PromotionPolicy.objects.get()
    data = {
        "model_type": "xgboost", "min_sharpe": 1.0, "min_win_rate": 0.52,
        "min_profit_factor": 1.3, "max_drawdown": 0.15, "min_trades": 50, "min_dsr": "",
        "fee": 0.0005, "eval_fraction": 0.25, "validation_fraction": 0.2, "regime_min_bars": 200,
        "regime_max_loss": "",
    }  # fmt: skip
    url = _url(PromotionPolicy, "change", policy.pk)
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "both its minimum bars and its maximum loss" in str(
        response.context["adminform"].form.non_field_errors()
    )
    response = admin_client.post(url, {**data, "regime_max_loss": "1.5"})
    assert response.context["adminform"].form.errors.keys() == {"regime_max_loss"}
    assert admin_client.post(url, {**data, "regime_max_loss": "0.05"}).status_code == 302
    policy.refresh_from_db()
    assert (policy.regime_min_bars, policy.regime_max_loss) == (200, 0.05)
