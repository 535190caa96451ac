"""Strict query strings: a parameter an endpoint does not know is a 400 that names it, never a
filter silently ignored (a client that misspells `model_id` must not get every row back); a
parameter given twice, or empty where a value is needed, is a 400 too, as the schema says."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from rest_framework.serializers import Serializer

from clm_project.exceptions import InvalidInput

# Understood by every list (pagination) and by the browsable API (format).
COMMON_PARAMETERS = frozenset({"limit", "offset", "format"})
_PAGING = {"limit": 1, "offset": 0}  # the smallest value of each (documented in the schema)
# Which parameters each serializer class declares, and whether each may be blank: fixed per
# class, so read once per process instead of building the serializer's fields per request.
_BLANK_ALLOWED: dict[type[Serializer], dict[str, bool]] = {}


def _blank_allowed(serializer_class: type[Serializer] | None) -> dict[str, bool]:
    if serializer_class is None:
        return {}
    if serializer_class not in _BLANK_ALLOWED:
        _BLANK_ALLOWED[serializer_class] = {
            name: bool(getattr(field, "allow_blank", False))
            for name, field in serializer_class().fields.items()
        }
    return _BLANK_ALLOWED[serializer_class]


# Validated query strings, per serializer class and parameters: validating builds the serializer's
# fields (deep copies of every choice list) each time, for the few query strings a client repeats.
# Only for a class whose validation is its fields' own (no `validate` or `validate_<name>`
# methods, which could read the database or the clock) and only scalar results, handed out as
# copies; an invalid query is never kept (its 400 is raised again).
_VALIDATED: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
_VALIDATED_KEPT = 1024
_VALIDATED_LOCK = threading.Lock()
_SCALARS = (str, int, float, bool, type(None), datetime, date, time, uuid.UUID, Decimal)
_PURE: dict[type[Serializer], bool] = {}


def _pure(serializer_class: type[Serializer]) -> bool:
    if serializer_class not in _PURE:
        own = set(dir(serializer_class)) - set(dir(Serializer))
        _PURE[serializer_class] = serializer_class.validate is Serializer.validate and not any(
            name.startswith("validate_") for name in own
        )
    return _PURE[serializer_class]


def _validated(serializer_class: type[Serializer], params: Any) -> dict[str, Any]:
    key = (serializer_class, *((name, params[name]) for name in params))
    if _pure(serializer_class):
        with _VALIDATED_LOCK:
            kept = _VALIDATED.get(key)
            if kept is not None:
                _VALIDATED.move_to_end(key)
                return dict(kept)
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    if _pure(serializer_class) and all(isinstance(v, _SCALARS) for v in data.values()):
        with _VALIDATED_LOCK:
            _VALIDATED[key] = dict(data)
            while len(_VALIDATED) > _VALIDATED_KEPT:
                _VALIDATED.popitem(last=False)
    return data


def query_validated(
    serializer_class: type[Serializer] | None, params: Any, *, allowed: frozenset = frozenset()
) -> dict[str, Any]:
    """`params` (a QueryDict) validated by `serializer_class`; unknown names are a 400."""
    fields = _blank_allowed(serializer_class)
    unknown = sorted(set(params) - set(fields) - COMMON_PARAMETERS - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown query parameters: {', '.join(unknown)}",
            extra={"errors": {name: ["Unknown query parameter."] for name in unknown}},
        )
    errors: dict[str, list[str]] = {}
    for name in params:
        values = params.getlist(name) if hasattr(params, "getlist") else [params[name]]
        if len(values) > 1:
            errors[name] = ["Given more than once."]
        elif values[0] == "" and not fields.get(name, False):
            errors[name] = ["May not be blank."]
        elif name in _PAGING and not (values[0].isdigit() and int(values[0]) >= _PAGING[name]):
            errors[name] = [f"An integer >= {_PAGING[name]} is required."]
    if errors:
        raise InvalidInput(
            f"invalid query parameters: {', '.join(sorted(errors))}", extra={"errors": errors}
        )
    if serializer_class is None:
        return {}
    return _validated(serializer_class, params)
