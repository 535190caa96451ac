"""Validated query strings are kept per serializer class and parameters only where validating
them again could not answer differently, and are handed out as copies."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from rest_framework import serializers

from clm_project import query
from clm_project.exceptions import InvalidInput
from clm_project.query import query_validated


class Plain(serializers.Serializer):
    status = serializers.ChoiceField(choices=["a", "b"], required=False)
    since = serializers.DateTimeField(required=False)


class Checked(serializers.Serializer):
    n = serializers.IntegerField()
    calls = 0

    def validate_n(self, value: int) -> int:
        type(self).calls += 1
        return value


def test_a_plain_query_is_validated_once_and_handed_out_as_copies():
    params = QueryDict("status=a&since=2026-01-02T03:04:05Z")
    first = query_validated(Plain, params)
    first["status"] = "changed by a caller"
    again = query_validated(Plain, params)
    assert again["status"] == "a" and again["since"].year == 2026
    assert (Plain, ("status", "a"), ("since", "2026-01-02T03:04:05Z")) in query._VALIDATED


def test_an_invalid_query_is_a_400_every_time():
    for _ in range(2):
        with pytest.raises(serializers.ValidationError):
            query_validated(Plain, QueryDict("status=zzz"))
        with pytest.raises(InvalidInput):
            query_validated(Plain, QueryDict("status=a&status=b"))


def test_a_serializer_with_its_own_validation_is_validated_every_time():
    Checked.calls = 0
    for _ in range(3):
        assert query_validated(Checked, QueryDict("n=4")) == {"n": 4}
    assert Checked.calls == 3
