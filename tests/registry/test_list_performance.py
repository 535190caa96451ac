"""What makes the version lists cheap must not change what they answer: queries per request do not
grow with the page, a count kept per versions revision is the exact count after every kind of
change, and rows written by the serializers' per-class plans equal DRF's per-field output."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers

from registry import selectors, services
from registry.api import serializers as s
from registry.models import (
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    TrainingJob,
    VersionsRevision,
)
from tests.conftest import evaluation_add, version_add

MODEL = "xgboost-btcusdt-1h"


@pytest.fixture
def revision(db) -> None:
    """The row migration 0008 writes (a transactional test's flush empties the table)."""
    VersionsRevision.objects.get_or_create(pk=1)


def _queries(client, path: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content[:300]
    return len(captured), response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/clm/models?",
        "/clm/models?status=candidate&ordering=-sharpe&",
        f"/clm/models/{MODEL}/versions?",
        "/clm/jobs?",
        "/clm/evaluations?",
        "/clm/events?",
    ],
)
def test_list_queries_are_the_same_at_two_page_sizes(reader_client, revision, path):
    for i in range(12):
        evaluation_add(version=version_add(sharpe=1.0 + i / 10), sharpe=2.0)
        services.training_job_cancel(
            job_id=services.training_job_create(
                request=services.JobRequest(model_type="xgboost", symbol=f"S{i}", timeframe="1h"),
                dispatch=False,
            )[0].pk
        )
    cold, warm, counts = {}, {}, set()
    for size in (2, 12):
        selectors._VERSION_COUNTS.clear()  # as a worker that has not counted this list yet
        cold[size], body = _queries(reader_client, f"{path}limit={size}")
        warm[size], _ = _queries(reader_client, f"{path}limit={size}")
        assert len(body["results"]) == size
        counts.add(body["count"])

    assert len(counts) == 1 and counts.pop() >= 12
    assert cold[2] == cold[12] and warm[2] == warm[12] <= cold[2]


def test_cached_count_follows_every_change(reader_client, operator_client, revision):
    def count(query: str = "") -> int:
        return reader_client.get(f"/clm/models?{query}").json()["count"]

    first = version_add(sharpe=1.2)
    assert (count(), count("status=candidate"), count("min_sharpe=1.5")) == (1, 1, 0)
    second = version_add()
    assert (count(), count("status=candidate")) == (2, 2)
    services.model_version_promote(model_id=MODEL, version=second.version, actor="t")
    assert (count("status=candidate"), count("status=production")) == (1, 1)
    evaluation_add(version=first, sharpe=2.0)  # moves its latest Sharpe over the filter
    assert count("min_sharpe=1.5") == 2
    version_add(symbol="ETHUSDT")
    assert (count(), count("symbol=ethusdt"), count(f"model_id={MODEL}")) == (3, 1, 2)
    assert reader_client.get(f"/clm/models/{MODEL}/versions").json()["count"] == 2


def test_count_without_the_revision_row_still_counts(reader_client, db):
    VersionsRevision.objects.all().delete()
    version_add()
    assert reader_client.get("/clm/models").json()["count"] == 1
    version_add()
    assert reader_client.get("/clm/models").json()["count"] == 2


def test_the_revision_moves_only_with_what_a_count_reads(revision):
    def now() -> int:
        return VersionsRevision.objects.get(pk=1).revision

    before = now()
    version = version_add(passed=None)
    registered = now()
    assert registered > before
    ModelVersion.objects.filter(pk=version.pk).update(notes="annotated")
    assert now() == registered
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.FAILED)
    assert now() > registered


def _drf(serializer: serializers.Serializer, instance) -> dict:
    """DRF's own per-field output, bypassing the plan."""
    return serializers.Serializer.to_representation(serializer, instance)


def test_planned_rows_equal_drf_output(revision):
    version = version_add(status=ModelStatus.PRODUCTION)
    evaluation_add(version=version, sharpe=2.5, profit_factor=None)
    version_add(passed=None)  # no evaluation: a null nested object
    services.training_job_create(
        request=services.JobRequest(model_type="xgboost", symbol="BTCUSDT", timeframe="1h"),
        dispatch=False,
    )
    cases = [
        (s.ModelVersionSerializer, selectors.model_versions_query(selectors.ModelQuery())),
        (s.EvaluationSerializer, selectors.evaluations_list()),
        (s.EvaluationListSerializer, selectors.evaluations_list()),
        (s.TrainingJobSerializer, TrainingJob.objects.select_related("model", "version")),
        (s.LifecycleEventSerializer, LifecycleEvent.objects.select_related("model", "version")),
        (s.OutboxEventSerializer, OutboxEvent.objects.all()),
    ]
    for cls, rows in cases:
        assert rows, cls
        for row in rows:
            serializer = cls()
            assert serializer.to_representation(row) == _drf(serializer, row), cls
    planned = {cls for cls, _ in cases if s._plan(cls) is not None}
    assert s.ModelVersionSerializer in planned and s.EvaluationSerializer in planned
