"""The project's JSON renderer writes what DRF's renderer writes for the same data."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import orjson
import pytest
from django.utils.translation import gettext_lazy
from rest_framework import renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from clm_project.renderers import JSONRenderer

CASES = [
    {"text": "é中😀 </script>", "n": 1, "f": 0.1, "big_f": 1e300, "neg": -0.0, "none": None},
    {"when": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "day": date(2026, 1, 2)},
    {"at": time(3, 4, 5, 123456), "span": timedelta(seconds=90), "price": Decimal("1.25")},
    {"id": uuid.UUID(int=7), "lazy": gettext_lazy("Not found."), "keys": {1: "a", 2.5: "b"}},
    {"nested": ReturnDict({"a": ReturnList([1, 2], serializer=None)}, serializer=None)},
    {"tuple": (1, 2), "set": {3}, "bools": [True, False]},
    {"sep": "line\u2028para\u2029end"},
    [1, "two", [3.0]],
]


@pytest.mark.parametrize("data", CASES)
def test_the_same_json_as_drf(data):
    ours = JSONRenderer().render(data, "application/json")
    drf = renderers.JSONRenderer().render(data, "application/json")
    assert json.loads(ours) == json.loads(drf)
    # Times go through DRF's encoder: the same text.
    if "when" in data:
        assert b'"2026-01-02T03:04:05.678901Z"' in ours and b'"2026-01-02T03:04:05.678901Z"' in drf


def test_line_and_paragraph_separators_are_escaped_as_drf_does():
    out = JSONRenderer().render({"sep": "a\u2028b\u2029c"}, "application/json")
    assert b"\\u2028" in out and b"\\u2029" in out and "\u2028".encode() not in out


def test_an_integer_beyond_64_bits_is_written_by_drf():
    assert json.loads(JSONRenderer().render({"n": 2**70}, "application/json")) == {"n": 2**70}


def test_nan_and_infinities_are_null():
    out = JSONRenderer().render({"a": float("nan"), "b": float("inf")}, "application/json")
    assert json.loads(out) == {"a": None, "b": None}


def test_json_text_goes_out_as_it_is_compact_or_indented():
    data = {"kept": orjson.Fragment('{"x": [1, 2]}'), "n": 1}
    compact = JSONRenderer().render(data, "application/json")
    assert compact == b'{"kept":{"x": [1, 2]},"n":1}'
    indented = JSONRenderer().render(data, "application/json; indent=4")
    assert json.loads(indented) == {"kept": {"x": [1, 2]}, "n": 1} and b"\n    " in indented


def test_nothing_renders_as_an_empty_body():
    assert JSONRenderer().render(None, "application/json") == b""
