"""Signals and predictions: artifacts loaded outside CLM, GET .../signal, POST .../predict, and the
per-process model cache following promotions."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from registry import services
from registry.models import ModelStatus, ModelVersion
from tests.training.serving_fixtures import MODEL, SYMBOL
from training.data.bars import as_datetime, bars_frame, load_bars
from training.data.dataset import Bars
from training.data.features import build_dataset
from training.promotion.experiments import ArmRequest, experiment_start
from training.serving import services as serving
from training.serving.inference import ArtifactFormatError, load_artifact
from training.trainers import trainer_class

REPO = Path(__file__).resolve().parents[2]


def _expected(blob: bytes, *, end: int | None = None) -> float:
    """The position of an artifact for the last stored bar (up to row `end`), computed apart."""
    bars = load_bars(SYMBOL, "1h")
    bars = bars.slice(slice(0, end if end is not None else len(bars)))
    model = load_artifact(blob)
    bars = bars.slice(slice(max(0, len(bars) - model.signal_bars), len(bars)))
    return model.latest_position(bars)


# ---------------------------------------------------------------------------------------------
# The public loader


def test_load_artifact_gives_the_trainers_positions(market, fitted):
    blob, spec = fitted[0]
    model = load_artifact(blob)
    assert model.model_type == "xgboost" and model.feature_spec == spec
    trainer = trainer_class("xgboost").loads(blob)
    expected = trainer.positions(build_dataset(market, spec), slice(0, len(market)))
    np.testing.assert_array_equal(model.positions(market), expected)
    # The same from a DataFrame with tz-aware timestamps, and from a plain mapping.
    np.testing.assert_array_equal(model.positions(bars_frame(market)), expected)
    columns = {c: getattr(market, c) for c in ("timestamp", "open", "high", "low", "close")}
    np.testing.assert_array_equal(model.positions({**columns, "volume": market.volume}), expected)
    assert np.all(np.abs(expected) <= 1) and np.any(expected != 0)


def test_an_artifact_without_feature_spec_rebuilds_it_from_the_feature_names(market, fitted):
    blob, spec = fitted[0]
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(files["meta.json"])
    del meta["feature_spec"]
    files["meta.json"] = json.dumps(meta).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in files.items():
            archive.writestr(name, payload)
    older = load_artifact(buffer.getvalue())
    assert older.feature_spec == spec
    np.testing.assert_array_equal(older.positions(market), load_artifact(blob).positions(market))


def test_load_artifact_refuses_bad_bytes_and_a_wrong_sha256(fitted):
    with pytest.raises(ArtifactFormatError, match="not a CLM artifact"):
        load_artifact(b"not a zip")
    with pytest.raises(ArtifactFormatError, match="does not match"):
        load_artifact(fitted[0][0], sha256="0" * 64)


def test_a_downloaded_artifact_serves_positions_without_django(tmp_path, market, fitted):
    blob, _ = fitted[0]
    (tmp_path / "model.clm").write_bytes(blob)
    bars_frame(market).to_csv(tmp_path / "bars.csv", index=False)
    script = (
        "import sys, json, pandas as pd\n"
        "from training.serving.inference import load_artifact\n"
        f"model = load_artifact({str(tmp_path / 'model.clm')!r})\n"
        f"positions = model.positions(pd.read_csv({str(tmp_path / 'bars.csv')!r}))\n"
        "print(json.dumps({'django': any(m.startswith('django') for m in sys.modules),"
        " 'positions': positions.tolist()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["django"] is False
    np.testing.assert_allclose(answer["positions"], load_artifact(blob).positions(market))


# ---------------------------------------------------------------------------------------------
# GET /clm/models/{model_id}/signal


def test_signal_is_production_s_position_for_the_latest_bar(reader_client, stored, fitted):
    response = reader_client.get(f"/clm/models/{MODEL}/signal")
    assert response.status_code == 200, response.json()
    body = response.json()
    last = as_datetime(load_bars(SYMBOL, "1h").timestamp[-1])
    assert body["version"] == 1 and body["status"] == "production"
    assert body["position"] == pytest.approx(_expected(fitted[0][0]))
    assert body["bar_timestamp"] == last.isoformat().replace("+00:00", "Z")
    features = body["features"]
    # The synthetic market ends long ago: the signal says its bar is not fresh.
    assert features["fresh"] is False and features["bar_age_seconds"] > 0
    assert features["bars_used"] == load_artifact(fitted[0][0]).signal_bars
    assert body["allocation"] is None


def test_signal_of_a_version_and_at_a_past_bar(reader_client, stored, fitted):
    body = reader_client.get(f"/clm/models/{MODEL}/signal?version=2").json()
    assert body["version"] == 2 and body["status"] == "candidate"
    assert body["position"] == pytest.approx(_expected(fitted[1][0]))

    bars = load_bars(SYMBOL, "1h")
    past = as_datetime(bars.timestamp[1_700])
    response = reader_client.get(
        f"/clm/models/{MODEL}/signal", {"at": past.isoformat(), "version": 2}
    )
    body = response.json()
    assert body["bar_timestamp"] == past.isoformat().replace("+00:00", "Z")
    assert body["position"] == pytest.approx(_expected(fitted[1][0], end=1_701))


def test_signal_errors(reader_client, stored, anon_client):
    assert reader_client.get("/clm/models/nope-x-1h/signal").status_code == 404
    assert reader_client.get(f"/clm/models/{MODEL}/signal?version=9").status_code == 404
    response = reader_client.get(f"/clm/models/{MODEL}/signal?versoin=2")
    assert response.status_code == 400
    assert "versoin" in response.json()["errors"]
    assert reader_client.get(f"/clm/models/{MODEL}/signal?version=x").status_code == 400
    services.model_version_set_status(
        model_id=MODEL, version=2, status=ModelStatus.FAILED, actor="test"
    )
    assert reader_client.get(f"/clm/models/{MODEL}/signal?version=2").status_code == 409
    # Before the first production version there is nothing to serve at that time.
    response = reader_client.get(f"/clm/models/{MODEL}/signal?at=2000-01-01T00:00:00Z")
    assert response.status_code == 404
    assert anon_client.get(f"/clm/models/{MODEL}/signal").status_code in (401, 403)


def test_no_stale_version_after_a_promote_or_rollback(reader_client, stored, fitted):
    first = reader_client.get(f"/clm/models/{MODEL}/signal").json()
    assert first["version"] == 1
    services.model_version_promote(model_id=MODEL, version=2, actor="test")
    after = reader_client.get(f"/clm/models/{MODEL}/signal").json()
    assert after["version"] == 2 and after["artifact_sha256"] != first["artifact_sha256"]
    assert after["artifact_sha256"] == ModelVersion.objects.get(version=2).artifact_sha256
    assert after["position"] == pytest.approx(_expected(fitted[1][0]))
    services.model_version_rollback(model_id=MODEL, target_version=1, actor="test")
    back = reader_client.get(f"/clm/models/{MODEL}/signal").json()
    assert back["version"] == 1 and back["position"] == first["position"]
    # Each artifact was read once: the cache served the repeats.
    assert serving.model_cache.loads == 2


def test_signal_carries_the_experiment_s_arms(reader_client, stored, fitted):
    experiment = experiment_start(
        model_id=MODEL, arms=[ArmRequest(1, 0.7), ArmRequest(2, 0.3)], actor="test", min_bars=50
    )
    body = reader_client.get(f"/clm/models/{MODEL}/signal").json()
    arms = {arm["version"]: arm for arm in body["allocation"]}
    assert set(arms) == {1, 2}
    assert arms[1]["role"] == "control" and arms[1]["weight"] == 0.7
    assert arms[1]["position"] == pytest.approx(body["position"])
    assert arms[2]["position"] == pytest.approx(_expected(fitted[1][0]))
    assert arms[2]["experiment_id"] == experiment.pk


# ---------------------------------------------------------------------------------------------
# POST /clm/models/{model_id}/predict


def _rows(bars: Bars) -> list[dict]:
    return [
        {"timestamp": as_datetime(bars.timestamp[i]).isoformat(), "open": bars.open[i],
         "high": bars.high[i], "low": bars.low[i], "close": bars.close[i],
         "volume": bars.volume[i]}
        for i in range(len(bars))
    ]  # fmt: skip


def test_predict_gives_positions_for_the_bars_sent(reader_client, stored, market, fitted):
    recent = market.slice(slice(1_400, 1_900))
    response = reader_client.post(
        f"/clm/models/{MODEL}/predict", {"bars": _rows(recent)}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["version"] == 1 and len(body["positions"]) == len(recent)
    expected = load_artifact(fitted[0][0]).positions(recent)
    np.testing.assert_allclose([p["position"] for p in body["positions"]], expected)
    assert body["positions"][-1]["timestamp"].startswith(
        as_datetime(recent.timestamp[-1]).isoformat()[:19]
    )
    with_version = reader_client.post(
        f"/clm/models/{MODEL}/predict", {"bars": _rows(recent), "version": 2}, format="json"
    ).json()
    assert with_version["version"] == 2


def test_predict_names_every_bad_bar(reader_client, stored, market):
    rows = _rows(market.slice(slice(0, 5)))
    rows[1]["high"] = 0.5 * rows[1]["low"]
    rows[3]["close"] = "abc"
    rows[4]["timestamp"] = rows[0]["timestamp"]
    response = reader_client.post(f"/clm/models/{MODEL}/predict", {"bars": rows}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]["bars"]
    assert any(e.startswith("bars[1]: high is below") for e in errors), errors
    assert any(e.startswith("bars[3]: close is not a finite number") for e in errors), errors
    assert any(e.startswith("bars[4]: duplicate timestamp") for e in errors), errors
    for body in ({"bars": []}, {"bars": "x"}, {}, {"bars": [1, 2]}):
        response = reader_client.post(f"/clm/models/{MODEL}/predict", body, format="json")
        assert response.status_code == 400, body
