"""Strict query strings: a parameter an endpoint does not know is a 400 that names it, never a
filter silently ignored (a client that misspells `model_id` must not get every row back); a
parameter given twice, or empty where a value is needed, is a 400 too, as the schema says."""

from __future__ import annotations

from typing import Any

from rest_framework.serializers import Serializer

from clm_project.exceptions import InvalidInput

# Understood by every list (pagination) and by the browsable API (format).
COMMON_PARAMETERS = frozenset({"limit", "offset", "format"})
_PAGING = {"limit": 1, "offset": 0}  # the smallest value of each (documented in the schema)


def query_validated(
    serializer_class: type[Serializer] | None, params: Any, *, allowed: frozenset = frozenset()
) -> dict[str, Any]:
    """`params` (a QueryDict) validated by `serializer_class`; unknown names are a 400."""
    fields = serializer_class().fields if serializer_class else {}
    unknown = sorted(set(params) - set(fields) - COMMON_PARAMETERS - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown query parameters: {', '.join(unknown)}",
            extra={"errors": {name: ["Unknown query parameter."] for name in unknown}},
        )
    errors: dict[str, list[str]] = {}
    for name in params:
        values = params.getlist(name) if hasattr(params, "getlist") else [params[name]]
        field = fields.get(name)
        if len(values) > 1:
            errors[name] = ["Given more than once."]
        elif values[0] == "" and not getattr(field, "allow_blank", False):
            errors[name] = ["May not be blank."]
        elif name in _PAGING and not (values[0].isdigit() and int(values[0]) >= _PAGING[name]):
            errors[name] = [f"An integer >= {_PAGING[name]} is required."]
    if errors:
        raise InvalidInput(
            f"invalid query parameters: {', '.join(sorted(errors))}", extra={"errors": errors}
        )
    if serializer_class is None:
        return {}
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
