"""The shell doors: train_model and the demo, run in-process on the test database."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registry.models import ModelVersion, TrainingJob
from training.models import TriggerRecord

from .conftest import store_bars


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_train_model_trains_evaluates_and_reports():
    store_bars("BTCUSDT", 4_000, seed=11)
    out = StringIO()
    call_command(
        "train_model", model_type="xgboost", symbol="btcusdt", timeframe="1h",
        param=["n_estimators=40", "max_depth=3"], stdout=out,
    )  # fmt: skip
    version = ModelVersion.objects.get()
    assert version.params["n_estimators"] == 40
    record = TriggerRecord.objects.get()  # the shell door leaves a trigger record too
    assert (record.outcome, record.trigger_reason, record.requested_by) == (
        "created", "manual", "cli"
    )  # fmt: skip
    assert f"xgboost-btcusdt-1h v1: {version.status}" in out.getvalue()
    assert "Sharpe" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_train_model_refuses_a_series_without_bars_and_bad_params():
    with pytest.raises(CommandError, match="no bars for NOPE 1h"):
        call_command("train_model", model_type="xgboost", symbol="NOPE", timeframe="1h")
    store_bars("BTCUSDT", 1_000, seed=11)
    # Params are checked before a job exists, as at POST /clm/train.
    with pytest.raises(CommandError, match=r"unknown xgboost params: \['bogus'\]"):
        call_command(
            "train_model", model_type="xgboost", symbol="BTCUSDT", param=["bogus=1"],
            stdout=StringIO(),
        )  # fmt: skip
    assert not TrainingJob.objects.exists()  # refused before a job was made


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_demo_runs_end_to_end_on_a_small_market():
    out = StringIO()
    call_command("demo", families="xgboost", bars=3_000, regime_bars=600, seed=7, stdout=out)
    text = out.getvalue()
    assert "== 6/6 the registry" in text
    # Two symbols, trained before and after the staged regime change.
    assert ModelVersion.objects.count() == 4
    assert set(TrainingJob.objects.values_list("trigger_reason", flat=True)) == {
        "manual", "regime_change"
    }  # fmt: skip
    # Every job came through the trigger handlers and left its record, the regime change included
    # (the demo's policies skip the cooldown, and restore it after).
    records = TriggerRecord.objects.filter(outcome="created")
    assert records.count() == 4
    assert {r.trigger_reason for r in records} == {"manual", "regime_change"}
    assert all(r.job_id is not None and r.requested_by == "demo" for r in records)
    assert "xgboost-btcusdt-1h" in text and "Open the result" in text


@pytest.mark.django_db(transaction=True)
def test_demo_refuses_unknown_families():
    with pytest.raises(CommandError, match="unknown families"):
        call_command("demo", families="xgboost,prophet", stdout=StringIO())
