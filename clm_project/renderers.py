"""The project's JSON renderer (REST_FRAMEWORK's default; in a module of its own because DRF
reads its renderer settings while rest_framework.views is being imported)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils import encoders


class _FragmentEncoder(encoders.JSONEncoder):
    """DRF's encoder, reading orjson fragments (JSON text kept as it came from the database)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, orjson.Fragment):
            return json.loads(orjson.dumps(o))
        return super().default(o)


# What orjson leaves to DRF (times, lazy text, decimals, fragments for the fallback), one encoder.
_drf_default = _FragmentEncoder().default


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSON renderer, written by orjson when the body is compact (what API clients get):
    the same JSON for the same data (DRF's own encoding for what orjson leaves to it, such as
    datetimes, lazy text and decimals), several times faster, and JSON text kept as
    orjson.Fragment goes out as it is (ReadModelSerializer.write_rows). An indented body (the
    browsable API, `; indent=N`), or one orjson refuses (an integer beyond 64 bits), is written
    by DRF as before; NaN and infinities, which JSON cannot carry, are null."""

    encoder_class = _FragmentEncoder

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}) is None:
            try:
                out = orjson.dumps(data, default=_drf_default, option=_ORJSON_OPTIONS)
            except orjson.JSONEncodeError:
                pass
            else:
                # As DRF does: U+2028 and U+2029 escaped, for JSON read as JavaScript.
                if b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out:
                    out = out.replace(b"\xe2\x80\xa8", b"\\u2028")
                    out = out.replace(b"\xe2\x80\xa9", b"\\u2029")
                return out
        return super().render(data, accepted_media_type, renderer_context)
