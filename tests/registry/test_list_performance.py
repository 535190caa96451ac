"""What makes the version lists cheap must not change what they answer: queries per request do not
grow with the page, a count kept per versions revision is the exact count after every kind of
change, and rows written by the serializers' per-class plans equal DRF's per-field output. The
same for the production read and promotion: few queries, and authentication, permissions and
answers exactly as before."""

from __future__ import annotations

import pytest
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clm_project.auth import TokenAuthentication
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


# ---------------------------------------------------------------------------------------------
# The request path of a trading service and of a promotion, through token authentication


@pytest.fixture
def token_client(operator) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}")
    return client


def test_promote_makes_a_fixed_number_of_queries_and_answers_from_what_it_wrote(
    token_client, revision
):
    live = version_add(status=ModelStatus.PRODUCTION)
    target = version_add()
    evaluation = evaluation_add(version=target, sharpe=2.7)
    body = {"model_id": MODEL, "version": target.version, "reason": "better"}
    with CaptureQueriesContext(connection) as captured:
        response = token_client.post("/clm/promote", body, format="json")
    assert response.status_code == 200, response.content
    # The token with its user's permissions; then BEGIN, the lock of the model line, the lock of
    # the version and the live version (with what a retired one is judged on), one statement of
    # both updates, both audit rows and the outbox event, COMMIT.
    statements = [q["sql"] or "" for q in captured.captured_queries]
    assert len(statements) == 6, statements
    assert statements[1].startswith(("BEGIN", "SAVEPOINT")), statements
    assert statements[4].startswith("WITH retired AS (UPDATE"), statements
    answer = response.json()
    assert answer["changed"] is True and answer["status"] == ModelStatus.PRODUCTION
    assert answer == {
        **token_client.get(f"/clm/models/{MODEL}/versions/{target.version}").json(),
        "changed": True,
    }
    assert answer["latest_evaluation"]["id"] == evaluation.pk
    assert token_client.get(f"/clm/models/{MODEL}/production").json()["version"] == target.version
    retire, promote = LifecycleEvent.objects.filter(model__model_id=MODEL).order_by("-id")[:2][::-1]
    assert (retire.version_id, retire.action, retire.from_status, retire.to_status) == (
        live.pk, "retire", ModelStatus.PRODUCTION, ModelStatus.RETIRED,
    )  # fmt: skip
    assert (promote.version_id, promote.action, promote.to_status, promote.reason) == (
        target.pk, "promote", ModelStatus.PRODUCTION, "better",
    )  # fmt: skip
    assert OutboxEvent.objects.filter(event_type="model_promoted").count() >= 1
    with CaptureQueriesContext(connection) as captured:
        again = token_client.post("/clm/promote", body, format="json")
    assert again.status_code == 200 and again.json() == {**answer, "changed": False}
    # Promoting the production version again: the locked reads, no write.
    statements = [q["sql"] or "" for q in captured.captured_queries]
    assert len(statements) == 5, statements
    assert not any(sql.startswith(("INSERT", "UPDATE", "WITH")) for sql in statements), statements


def test_production_read_is_two_queries_and_follows_a_promotion_at_once(token_client, revision):
    first = version_add(status=ModelStatus.PRODUCTION)
    with CaptureQueriesContext(connection) as captured:
        response = token_client.get(f"/clm/models/{MODEL}/production")
    assert response.json()["version"] == first.version and len(captured) == 2
    second = version_add()
    services.model_version_promote(model_id=MODEL, version=second.version, actor="t")
    assert token_client.get(f"/clm/models/{MODEL}/production").json()["version"] == second.version


def test_a_read_reads_the_token_alone_and_a_write_its_permissions_with_it(
    token_client, operator, revision
):
    """A GET's views check no model permission, so its token query leaves them out; a POST's
    token query carries them, and its permission check asks nothing more. A read that does check
    one (the artifact download) reads them once, as Django's ModelBackend does."""
    if connection.vendor != "postgresql":
        pytest.skip("the permissions ride with the token on PostgreSQL")
    live = version_add(status=ModelStatus.PRODUCTION)
    target = version_add()
    with CaptureQueriesContext(connection) as read:
        assert token_client.get(f"/clm/models/{MODEL}/production").status_code == 200
    assert "auth_permission" not in read.captured_queries[0]["sql"]
    body = {"model_id": MODEL, "version": target.version}
    with CaptureQueriesContext(connection) as write:
        assert token_client.post("/clm/promote", body, format="json").status_code == 200
    permission_reads = [q for q in write.captured_queries if "auth_permission" in q["sql"]]
    assert len(permission_reads) == 1 and "authtoken_token" in permission_reads[0]["sql"]
    download = f"/clm/models/{MODEL}/versions/{live.version}/artifact"
    assert token_client.get(download).status_code != 403  # allowed (the file may be missing)
    operator.user_permissions.remove(Permission.objects.get(codename="promote_modelversion"))
    operator.user_permissions.remove(Permission.objects.get(codename="request_training"))
    operator.is_staff = False
    operator.save()
    assert token_client.get(download).status_code == 403


@pytest.mark.parametrize(
    ("bounds", "bad"),
    [
        ("limit=2;DROP TABLE x&offset=1", {"limit"}),
        ("limit=-3&offset=-5", {"limit", "offset"}),
        ("limit=2&offset=1e3", {"offset"}),
        ("limit=0", {"limit"}),
    ],
)
def test_page_bounds_that_are_not_integers_are_a_400(token_client, revision, bounds, bad):
    """A page's LIMIT and OFFSET go into its SQL as literals; anything but a positive limit and a
    non-negative offset is refused with the field's message before any SQL is written."""
    response = token_client.get(f"/clm/models?{bounds}")
    assert response.status_code == 400 and set(response.json()["errors"]) == bad


def test_page_bounds_written_into_the_sql_give_the_orms_page(token_client, revision):
    for _ in range(3):
        version_add()
    every = list(selectors.model_versions_query(selectors.ModelQuery()))
    for limit, offset in ((2, 1), (100_000, 0)):  # the second capped at the paginator's 500
        with CaptureQueriesContext(connection) as captured:
            body = token_client.get(f"/clm/models?limit={limit}&offset={offset}").json()
        assert [(row["model_id"], row["version"]) for row in body["results"]] == [
            (v.model.model_id, v.version) for v in every[offset : offset + min(limit, 500)]
        ]
        page_sql = [q["sql"] for q in captured.captured_queries if "IN (SELECT" in q["sql"]]
        assert page_sql and f"LIMIT {min(limit, 500)} OFFSET {offset})" in page_sql[0]


def test_a_revoked_permission_or_token_takes_effect_on_the_next_request(
    token_client, operator, revision
):
    version_add(status=ModelStatus.PRODUCTION)
    target = version_add()
    body = {"model_id": MODEL, "version": target.version}
    operator.user_permissions.remove(Permission.objects.get(codename="promote_modelversion"))
    assert token_client.post("/clm/promote", body, format="json").status_code == 403
    group = Group.objects.create(name="promoters")
    group.permissions.add(Permission.objects.get(codename="promote_modelversion"))
    operator.groups.add(group)
    assert token_client.post("/clm/promote", body, format="json").status_code == 200
    operator.is_active = False
    operator.save()
    refused = token_client.get(f"/clm/models/{MODEL}/production")
    assert refused.status_code == 401 and refused.json()["detail"] == "User inactive or deleted."
    operator.is_active = True
    operator.save()
    Token.objects.filter(user=operator).delete()
    refused = token_client.get(f"/clm/models/{MODEL}/production")
    assert refused.status_code == 401 and refused.json()["detail"] == "Invalid token."
    assert refused["WWW-Authenticate"] == "Token"


def test_permissions_in_one_query_equal_djangos(operator, db):
    group = Group.objects.create(name="readers-of-jobs")
    group.permissions.add(Permission.objects.get(codename="view_trainingjob"))
    operator.groups.add(group)
    fresh = User.objects.get(pk=operator.pk)
    with CaptureQueriesContext(connection) as captured:
        ours = fresh.get_all_permissions()
    assert len(captured) == 1
    assert ours == DjangoModelBackend().get_all_permissions(User.objects.get(pk=operator.pk))
    assert {"registry.promote_modelversion", "registry.view_trainingjob"} <= ours


def test_a_token_brings_its_users_permissions_as_django_reads_them(operator, db):
    """The token's one query carries the user's own and group permissions: checking them asks
    nothing more and answers as Django's ModelBackend; a superuser is answered as Django does."""
    group = Group.objects.create(name="readers-of-jobs")
    group.permissions.add(Permission.objects.get(codename="view_trainingjob"))
    operator.groups.add(group)
    key = Token.objects.create(user=operator).key
    with CaptureQueriesContext(connection) as captured:
        user, _ = TokenAuthentication().authenticate_credentials(key)
        assert user.has_perm("registry.promote_modelversion")
        assert user.has_perm("registry.view_trainingjob")
        assert not user.has_perm("registry.delete_modelversion")
        ours = user.get_all_permissions()
    assert len(captured) == 1
    assert ours == DjangoModelBackend().get_all_permissions(User.objects.get(pk=operator.pk))
    nobody = User.objects.create_user("nobody")
    user, _ = TokenAuthentication().authenticate_credentials(Token.objects.create(user=nobody).key)
    assert user.get_all_permissions() == set() and not user.has_perm("registry.view_trainingjob")
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    user, _ = TokenAuthentication().authenticate_credentials(Token.objects.create(user=boss).key)
    assert user.has_perm("registry.delete_modelversion")
    assert user.get_all_permissions() == DjangoModelBackend().get_all_permissions(boss)
