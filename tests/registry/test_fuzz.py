"""Schema-driven fuzzing: requests generated from the OpenAPI schema never get a server error.

For every operation in the schema, Hypothesis draws path parameters, query parameters and bodies
that are sometimes valid (from the declared types, enums and known ids) and often hostile: wrong
types, huge numbers, NaN, NUL and unpaired surrogates, missing or extra fields, malformed or deeply
nested JSON (whole bodies, and values of object fields such as `params` and `trigger_context`
nested up to 900 levels), form-encoded bodies.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.artifacts import artifact_save
from registry.models import ModelStatus
from registry.services import JobRequest, training_job_create
from tests.conftest import version_add

MODEL = "xgboost-btcusdt-1h"
Examples = dict[str, list[Any]]
SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
OPERATIONS = [
    (path, method.upper(), operation)
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
]

hostile_scalars = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["", " ", "\x00", "null", "NaN", "-1", "0", "1e309", "../..", "%", "🚀" * 20]),
)
hostile_json = st.recursive(
    hostile_scalars.filter(lambda v: not (isinstance(v, float) and not math.isfinite(v))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


def _nest(depth: int, kind: str, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if kind == "dict" else [leaf]
    return leaf


# Lists or dicts nested up to 900 levels: from 400 on deep enough to reach Python's recursion
# limit in anything that walks them recursively, shallow enough for json.dumps to write them.
deep_json = st.builds(
    _nest,
    st.one_of(st.integers(1, 80), st.integers(400, 900)),
    st.sampled_from(["dict", "list"]),
    hostile_scalars.map(str),
)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema:
        return _resolve(schema["allOf"][0])
    return schema


def _valid(schema: dict[str, Any]) -> st.SearchStrategy:
    """A value of the declared type (bounds, enums and formats respected)."""
    schema = _resolve(schema)
    if "enum" in schema:
        return st.sampled_from([v for v in schema["enum"] if v is not None] or [""])
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))  # unbounded if undeclared
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "object":
        return st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8))
    if kind == "array":
        return st.lists(st.text(max_size=8), max_size=3)
    if fmt == "date-time":
        return st.datetimes().map(lambda d: d.isoformat())
    if fmt == "uuid":
        return st.uuids().map(str)
    return st.text(max_size=schema.get("maxLength", 40))


def _hostile(schema: dict[str, Any]) -> st.SearchStrategy:
    """Wrong for this input: out of range, of another type, too long, or anything at all."""
    schema = _resolve(schema)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        odd = st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70).filter(lambda n: abs(n) > 2**31),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([-1, 0, 2**31, 2**63, "1.5", "1e400", "NaN", "-inf"]),
        )
    elif kind == "string":
        longest = schema.get("maxLength", 200)
        odd = st.one_of(
            st.text(min_size=longest + 1, max_size=longest + 50),
            st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20),
            st.sampled_from(["0000-00-00T00:00", "9999-12-31T23:59:59+14:00", "1e400"]),
        )
    elif kind == "object":
        odd = st.one_of(deep_json, st.dictionaries(st.text(max_size=4), deep_json, max_size=2))
    else:
        odd = st.one_of(st.text(max_size=20), st.lists(st.integers(), max_size=3))
    return st.one_of(odd, hostile_json, deep_json)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def requests(
    draw: st.DrawFn, path: str, method: str, operation: dict, examples: Examples
) -> dict[str, Any]:
    """One request. Its inputs are all good, all suspect, or all good but one hostile input."""
    params = operation.get("parameters", [])
    path_names = re.findall(r"{(\w+)}", path)
    query_names = [p["name"] for p in params if p["in"] == "query" and draw(st.booleans())]
    content = operation.get("requestBody", {}).get("content", {})
    body_schema = _resolve(content["application/json"]["schema"]) if content else {}
    body_names = [
        name
        for name in body_schema.get("properties", {})
        if name in body_schema.get("required", []) or draw(st.integers(0, 3))
    ]
    mode = draw(st.sampled_from(["good", "good", "good", "one-bad", "one-bad", "chaos"]))
    bad = draw(st.sampled_from([*path_names, *query_names, *body_names, None]))

    def value(name: str, schema: dict[str, Any]) -> Any:
        known = st.sampled_from(examples[name]) if name in examples else _valid(schema)
        good = st.one_of(known, known, _valid(schema))
        if mode == "chaos":
            return draw(st.one_of(good, _hostile(schema)))
        return draw(_hostile(schema) if mode == "one-bad" and name == bad else good)

    url = path
    for name in path_names:
        schema = next(p["schema"] for p in params if p["name"] == name and p["in"] == "path")
        url = url.replace(f"{{{name}}}", quote(_as_text(value(name, schema)), safe="") or "x")
    schemas = {p["name"]: p["schema"] for p in params}
    query = {name: _as_text(value(name, schemas[name])) for name in query_names}
    query.update(draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2)))
    request: dict[str, Any] = {"method": method, "path": f"{url}?{urlencode(query)}"}
    if not content:
        return request
    fields = {name: value(name, body_schema["properties"][name]) for name in body_names}
    if mode == "one-bad" and bad is None and fields:  # the hostile input: a missing field
        fields.pop(draw(st.sampled_from(sorted(fields))))
    kinds = ["json"] * 4 + ["form", "any", "raw", "deep", "deep-field", "deep-field"]
    kind = draw(st.sampled_from(kinds))
    if kind == "json":
        request.update(data=json.dumps(fields), content_type="application/json")
    elif kind == "form":
        form = {name: _as_text(v) for name, v in fields.items()}
        request.update(data=urlencode(form), content_type="application/x-www-form-urlencoded")
    elif kind == "any":
        request.update(data=json.dumps(draw(hostile_json)), content_type="application/json")
    elif kind == "deep":
        request.update(data="[" * draw(st.integers(1, 10**5)), content_type="application/json")
    elif kind == "deep-field":  # the fields as drawn, one object field (if any) nested deeply
        properties = body_schema.get("properties", {})
        objects = [n for n in properties if _resolve(properties[n]).get("type") == "object"]
        name = draw(st.sampled_from(objects or sorted(fields) or ["extra"]))
        fields[name] = {"k": draw(deep_json)} if name in objects else draw(deep_json)
        request.update(data=json.dumps(fields), content_type="application/json")
    else:
        request.update(data=draw(st.binary(max_size=60)), content_type="application/json")
    return request


@pytest.fixture
def examples(db) -> Examples:
    """Rows behind known good values, so that generated requests also reach the success paths."""
    stored = artifact_save(model_id=MODEL, blob=b"fuzz artifact")
    version_add(status=ModelStatus.PRODUCTION, artifact=stored)
    version_add(status=ModelStatus.CANDIDATE)
    version_add(status=ModelStatus.FAILED)
    job, _ = training_job_create(
        request=JobRequest(model_type="lightgbm", symbol="BTCUSDT", timeframe="1h"),
        dispatch=False,
    )
    return {
        "model_id": [MODEL],
        "version": [1, 2, 3],
        "target_version": [1, 2, 3],
        "job_id": [str(job.pk)],
        "symbol": ["BTCUSDT", "ethusdt"],
        "at": [timezone.now().isoformat()],
        "min_sharpe": ["1.5", "0"],
        "passed": ["true", "false"],
        "published": ["true", "false"],
        "limit": ["1", "10"],
        "offset": ["0", "1"],
        "params": [{"max_depth": 3}],
    }


@pytest.mark.parametrize(
    ("path", "method", "operation"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS]
)
def test_no_server_error(operator_client, examples, path, method, operation):
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=requests(path, method, operation, examples))
    def check(request: dict[str, Any]) -> None:
        response = operator_client.generic(
            request["method"],
            request["path"],
            data=request.get("data", ""),
            content_type=request.get("content_type", "application/octet-stream"),
        )
        assert response.status_code < 500, (request, response.content[:500])

    check()
