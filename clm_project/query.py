"""Strict query strings: a parameter an endpoint does not know is a 400 that names it, never a
filter silently ignored (a client that misspells `model_id` must not get every row back)."""

from __future__ import annotations

from typing import Any

from rest_framework.serializers import Serializer

from clm_project.exceptions import InvalidInput

# Understood by every list (pagination) and by the browsable API (format).
COMMON_PARAMETERS = frozenset({"limit", "offset", "format"})


def query_validated(
    serializer_class: type[Serializer] | None, params: Any, *, allowed: frozenset = frozenset()
) -> dict[str, Any]:
    """`params` (a QueryDict) validated by `serializer_class`; unknown names are a 400."""
    known = set(serializer_class().fields) if serializer_class else set()
    unknown = sorted(set(params) - known - COMMON_PARAMETERS - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown query parameters: {', '.join(unknown)}",
            extra={"errors": {name: ["Unknown query parameter."] for name in unknown}},
        )
    if serializer_class is None:
        return {}
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
