"""Request parsers: DRF's, minus the ways hostile bodies could turn into a server error."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# No request of the API nests deeper than a few levels; 64 leaves room and keeps every later
# recursive step (validation, psycopg's encoder, PostgreSQL's jsonb parser, rendering) far from
# Python's recursion limit.
MAX_JSON_DEPTH = 64


def nesting_depth(value: Any, *, limit: int) -> int:
    """How deeply `value`'s lists and dicts nest (a scalar is 0), counted without recursion.

    Stops as soon as `limit` is exceeded, returning limit + 1.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


class JSONParser(parsers.JSONParser):
    """Nesting deeper than MAX_JSON_DEPTH is a 400 before anything walks the data recursively."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        too_deep = ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise too_deep from None
        if nesting_depth(data, limit=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise too_deep
        return data
