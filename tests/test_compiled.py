"""Querysets compiled once per shape answer exactly what the ORM answers for every call's values,
and a shape whose values the ORM transforms is never compiled."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.db.models import Count, Min, Q
from django.db.transaction import TransactionManagementError

from clm_project.compiled import CompiledQuery
from registry import selectors
from registry.models import ModelStatus, ModelVersion, RegisteredModel
from tests.conftest import evaluation_add, version_add


def _ids(rows) -> list[int]:
    return [row.pk for row in rows]


@pytest.fixture
def versions(db) -> None:
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for _ in range(3):
            version_add(symbol=symbol)
    version_add(status=ModelStatus.PRODUCTION)
    version_add(timeframe="4h", passed=None)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"status": ModelStatus.CANDIDATE},
        {"model_id": "xgboost-btcusdt-1h", "ordering": "-version"},
        {"model_type": "xgboost", "timeframe": "1h", "ordering": "sharpe"},
        {"symbol": "ethusdt"},  # upper-cased by the selector: read through the ORM
        {"min_sharpe": 1.0, "ordering": "version"},
    ],
)
def test_pages_equal_the_orm_at_every_offset(versions, query):
    model_query = selectors.ModelQuery(**query)
    every = list(selectors.model_versions_query(model_query))
    assert every
    for offset in range(len(every) + 1):
        for limit in (1, 3):
            page = selectors.model_versions_page(model_query, offset=offset, limit=limit)
            assert _ids(page) == _ids(every[offset : offset + limit])
    page = selectors.model_versions_page(model_query, offset=0, limit=50)
    orm = every[0]
    ours = next(row for row in page if row.pk == orm.pk)
    assert (ours.model.model_id, ours.params, ours.created_at) == (
        orm.model.model_id, orm.params, orm.created_at,
    )  # fmt: skip
    if orm.latest_evaluation is not None:
        assert ours.latest_evaluation.sharpe == orm.latest_evaluation.sharpe


def test_a_transformed_value_is_never_compiled(versions):
    upper = CompiledQuery(
        lambda symbol: RegisteredModel.objects.filter(symbol=symbol.upper()), symbol=str
    )
    assert _ids(upper.rows(symbol="ethusdt")) == _ids(
        RegisteredModel.objects.filter(symbol="ETHUSDT")
    )
    assert upper._plans == {"default": None}
    contains = CompiledQuery(
        lambda part: RegisteredModel.objects.filter(model_id__contains=part).order_by("pk"),
        part=str,
    )
    assert _ids(contains.rows(part="eth")) == _ids(
        RegisteredModel.objects.filter(model_id__contains="eth").order_by("pk")
    )
    assert contains._plans == {"default": None}


def test_values_of_another_type_go_through_the_orm(versions):
    by_version = CompiledQuery(
        lambda version: ModelVersion.objects.filter(version=version), version=int
    )
    assert by_version.first(version=1) is not None
    assert by_version._plans["default"] is not None
    assert _ids(by_version.rows(version="1")) == _ids(ModelVersion.objects.filter(version=1))


def test_a_compiled_lock_needs_a_transaction(transactional_db):
    version_add()
    lock = CompiledQuery(
        lambda model_id: RegisteredModel.objects.select_for_update().filter(model_id=model_id),
        model_id=str,
    )
    with transaction.atomic():
        assert lock.first(model_id="xgboost-btcusdt-1h").model_id == "xgboost-btcusdt-1h"
        assert lock.first(model_id="unknown") is None
    with pytest.raises(TransactionManagementError):
        lock.first(model_id="xgboost-btcusdt-1h")


def test_a_null_related_row_stays_null(db):
    version = version_add(passed=None)
    found = selectors.model_version_get(model_id=version.model.model_id, version=version.version)
    assert found.latest_evaluation is None and found.model.model_id == version.model.model_id
    evaluation = evaluation_add(version=version, sharpe=3.1)
    found = selectors.model_version_get(model_id=version.model.model_id, version=version.version)
    assert found.latest_evaluation.pk == evaluation.pk


def test_a_constant_equal_to_a_placeholder_is_not_taken_for_the_value(versions):
    clash = CompiledQuery(
        lambda version: ModelVersion.objects.filter(Q(version=version) | Q(version=2_147_480_311)),
        version=int,
    )
    assert _ids(clash.rows(version=1)) == _ids(ModelVersion.objects.filter(version=1))
    assert clash._plans == {"default": None}


def test_annotations_land_on_the_rows_as_the_orm_sets_them(versions):
    evaluated = CompiledQuery(
        lambda model_id: (
            ModelVersion.objects.filter(model__model_id=model_id)
            .select_related("model")
            .annotate(n_evaluations=Count("evaluations"), first=Min("evaluations__id"))
            .order_by("version")
        ),
        model_id=str,
    )
    assert evaluated._plan_for(None, {"model_id": "x"}) is not None  # compiled, not the ORM
    ours = evaluated.rows(model_id="xgboost-btcusdt-1h")
    orm = list(evaluated.build(model_id="xgboost-btcusdt-1h"))
    assert ours and [(r.pk, r.model.model_id, r.n_evaluations, r.first) for r in ours] == [
        (r.pk, r.model.model_id, r.n_evaluations, r.first) for r in orm
    ]


def _prepared(sql_start: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            [sql_start + "%"],
        )
        return cursor.fetchone()[0]


def test_compiled_reads_are_prepared_once_per_connection(versions, settings):
    """PostgreSQL plans a compiled shape once per connection; with the setting off, never."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    shape = CompiledQuery(
        lambda status: ModelVersion.objects.filter(status=status).order_by("pk"), status=str
    )
    head = 'SELECT "registry_modelversion"."id"'
    settings.CLM_DB_PREPARED_STATEMENTS = False
    before = _prepared(head)
    assert _ids(shape.rows(status="candidate"))
    assert _prepared(head) == before
    settings.CLM_DB_PREPARED_STATEMENTS = True
    for status in ("candidate", "production", "candidate"):
        expected = ModelVersion.objects.filter(status=status).order_by("pk")
        assert _ids(shape.rows(status=status)) == _ids(expected)
    assert _prepared(head) == before + 1


def test_prepared_reads_are_logged_with_their_sql(versions, settings):
    """Django's query log (DEBUG, CaptureQueriesContext) shows a prepared read's SQL with its
    values in place, as for every other query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.CLM_DB_PREPARED_STATEMENTS = True
    shape = CompiledQuery(
        lambda status: ModelVersion.objects.filter(status=status).order_by("pk"), status=str
    )
    with CaptureQueriesContext(connection) as captured:
        shape.rows(status="candidate")
    (logged,) = captured.captured_queries
    assert logged["sql"].startswith("SELECT") and "'candidate'" in logged["sql"]


def test_constants_and_page_bounds_are_literals_values_are_parameters():
    """What varies per call stays a parameter; a shape's constants, and LIMIT and OFFSET, are
    written into the text, where text that could need escaping never is."""
    from clm_project.compiled import _literal, _pieces

    assert _pieces('a %% b %s c "%s"') == ["a %% b ", ' c "', '"']
    assert [_literal(v) for v in (7, -3, "registry.", ModelStatus.PRODUCTION)] == [
        "7", "(-3)", "'registry.'", "'production'",
    ]  # fmt: skip
    for kept in (True, "it's", "50%", "a--b", "back\\slash", "line\nbreak", 1.5, None):
        assert _literal(kept) is None


def test_a_page_is_planned_once_and_deep_offsets_do_not_crowd_the_prepared(
    versions, settings, monkeypatch
):
    """PostgreSQL reuses one plan for a shape's repeated text (its generic plan: no planning per
    call), which it could not while the shape's constants and LIMIT were parameters; a client
    paging through every offset adds at most _PREPARED_TEXTS statements per shape."""
    from django.db import connection

    from clm_project.compiled import _PREPARED_TEXTS

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    settings.CLM_DB_PREPARED_STATEMENTS = True
    monkeypatch.setattr(selectors, "_PAGES", {})  # shapes as a new process has them
    query = selectors.ModelQuery(status="candidate")  # as a query string gives it
    every = list(selectors.model_versions_query(query))
    head = 'SELECT "registry_modelversion"."id"'
    before = _prepared(head)
    for _ in range(8):
        page = selectors.model_versions_page(query, offset=0, limit=2)
    assert _ids(page) == _ids(every[:2])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            [head + "%LIMIT 2 OFFSET 0)%"],
        )
        ((statement, generic, custom),) = cursor.fetchall()
    assert "'candidate'" not in statement and "$1" in statement  # the value is a parameter
    assert generic >= 1 and custom <= 5, (generic, custom)
    for offset in range(1, 3 * _PREPARED_TEXTS):
        page = selectors.model_versions_page(query, offset=offset, limit=2)
        assert _ids(page) == _ids(every[offset : offset + 2])
    # (Fewer where an earlier test prepared some of these texts on this connection.)
    assert 1 <= _prepared(head) - before <= _PREPARED_TEXTS
