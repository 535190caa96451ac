"""Helpers for the observability tests: scraping /metrics and versions with a stored picture."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from registry import services
from registry.artifacts import artifact_save
from registry.models import EvaluationResult, ModelStatus, ModelVersion
from tests.conftest import PASSING_METRICS, version_add
from training.evaluation.plots import equity_curve_png


def scrape(client: Client, **extra: str) -> dict[str, list[Sample]]:
    """GET /metrics and parse it: {family name: samples}."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    text = response.content.decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`, None when there is none."""
    family = name.removesuffix("_total")
    for suffix in ("_bucket", "_count", "_sum"):
        family = family.removesuffix(suffix)
    for sample in families.get(family, []):
        if sample.name == name and labels.items() <= sample.labels.items():
            return sample.value
    return None


def total(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (0 when there is none)."""
    family = name.removesuffix("_total")
    for suffix in ("_bucket", "_count", "_sum"):
        family = family.removesuffix(suffix)
    return sum(
        sample.value
        for sample in families.get(family, [])
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture
def staff_client(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("staffer", password="pw-staff-123", is_staff=True))
    return client


def equity_picture_store(*, model_id: str, seed: int = 1, bars: int = 400) -> str:
    """Render a picture as the pipeline does and store it; returns its artifact path."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0005, 0.01, bars)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    timestamps = start + np.arange(bars) * np.timedelta64(3600, "s")
    picture = equity_curve_png(
        timestamps=timestamps,
        equity=np.cumprod(1 + returns),
        buy_hold=np.cumprod(1 + rng.normal(0.0003, 0.012, bars)),
        title=f"{model_id}: test picture",
    )
    return artifact_save(model_id=f"{model_id}/plots", blob=picture, suffix=".png").path


def version_with_picture(**kwargs) -> ModelVersion:
    """A version (see tests.conftest.version_add) whose latest evaluation has a stored picture."""
    version = version_add(passed=None, status=ModelStatus.TRAINING, **kwargs)
    model_id = version.model.model_id
    end = datetime(2026, 3, 1, tzinfo=UTC)
    services.evaluation_record(
        version=version, metrics=PASSING_METRICS, window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=end, n_bars=400, fee=0.0005, periods_per_year=8760, n_trials=1, gates={},
        passed=True, equity_curve=equity_picture_store(model_id=model_id),
    )  # fmt: skip
    services.model_version_set_status(
        model_id=model_id, version=version.version, status=ModelStatus.CANDIDATE, actor="test"
    )
    version.refresh_from_db()
    return version


def latest_evaluation(version: ModelVersion) -> EvaluationResult:
    return EvaluationResult.objects.filter(version=version).order_by("-created_at", "-id").first()
