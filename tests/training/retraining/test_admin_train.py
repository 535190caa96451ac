"""Training from the admin: a form over the manual trigger, params checked by the trainer."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from registry.models import JobStatus, TrainingJob
from tests.training.conftest import store_bars
from training.models import TriggerOutcome, TriggerRecord

pytestmark = pytest.mark.django_db

URL = "/admin/training/triggerrecord/train/"


@pytest.fixture
def bars() -> None:
    store_bars("BTCUSDT", 400, seed=3)


def _post(client: Client, **fields):
    data = {"model_type": "xgboost", "market": "BTCUSDT|1h", "params": "{}", "seed": "0"}
    return client.post(URL, {**data, **fields})


def test_the_form_lists_markets_with_their_bars_and_each_familys_params(admin_client, bars):
    assert reverse("admin:training_train") == URL
    page = admin_client.get(URL, {"model_type": "lightgbm", "market": "BTCUSDT|1h"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "BTCUSDT 1h: 400 bars" in html
    assert '<option value="lightgbm" selected>' in html
    assert 'data-model-type="nhits"' in html and "<code>max_depth</code>" in html


def test_a_valid_request_goes_through_the_manual_trigger(admin_client, bars):
    response = _post(admin_client, params='{"n_estimators": 30, "max_depth": 3}', seed="7")

    job = TrainingJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:registry_trainingjob_change", args=[job.pk])
    assert (job.params, job.seed, job.requested_by) == (
        {"n_estimators": 30, "max_depth": 3},
        7,
        "admin",
    )
    assert job.trigger_reason == "manual" and job.status in (JobStatus.PENDING, JobStatus.QUEUED)
    record = TriggerRecord.objects.get()
    assert (record.outcome, record.job_id, record.requested_by) == (
        TriggerOutcome.CREATED,
        job.pk,
        "admin",
    )
    assert record.payload["params"] == {"n_estimators": 30, "max_depth": 3}

    again = _post(admin_client)
    assert again.status_code == 302 and TrainingJob.objects.count() == 1
    assert TriggerRecord.objects.filter(outcome=TriggerOutcome.JOINED).count() == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{"max_depth": "deep"}', "param &#x27;max_depth&#x27; must be int"),
        ('{"max_depth": 0}', "must be &gt;= 1"),
        ('{"nope": 1}', "unknown xgboost params: [&#x27;nope&#x27;]"),
        ("[1, 2]", "Enter a JSON object"),
        ("{oops", "Enter a valid JSON"),
    ],
)
def test_params_are_checked_by_the_trainers_own_schema(admin_client, bars, params, message):
    response = _post(admin_client, params=params)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not TrainingJob.objects.exists() and not TriggerRecord.objects.exists()


def test_an_unknown_market_is_refused(admin_client, bars):
    response = _post(admin_client, market="ETHUSDT|1h")
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_training_needs_the_request_permission(bars):
    staff = User.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(URL).status_code == 403
    assert _post(client).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="request_training"))
    assert client.get(URL).status_code == 200
