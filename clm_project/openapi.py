"""The OpenAPI schema documents every error an operation can answer, in the one error shape.

drf-spectacular documents what each view declares; the errors every view shares (bad query or body,
no credentials, no permission, unknown path) are added here, once, to every operation that lacks
them, so a client generated from the schema knows every answer it can get.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = "Error"
# What clm_project.query accepts for the pagination parameters.
_PAGING_MINIMUM = {"limit": 1, "offset": 0}
_SHARED = {
    "400": "Invalid input: the body or query parameters, with field messages.",
    "401": "No credentials (WWW-Authenticate names the scheme).",
    "403": "Not allowed for this user.",
    "404": "Unknown path or object.",
    "405": "Method not allowed.",
    "406": "No acceptable content type.",
    "415": "Unsupported body content type.",
}
_ERROR = {
    "type": "object",
    "description": "The body of every error answer.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {}},
    },
    "required": ["detail", "code"],
}


def add_error_responses(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Postprocessing hook: shared error responses on every operation (no 401/403 without auth)."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(ERROR_SCHEMA, _ERROR)
    reference = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter["name"] in _PAGING_MINIMUM:
                    parameter["schema"]["minimum"] = _PAGING_MINIMUM[parameter["name"]]
            anonymous = operation.get("security", []) in ([], [{}])
            for code, description in _SHARED.items():
                if anonymous and code in ("401", "403"):
                    continue
                if code == "415" and method not in ("post", "put", "patch"):
                    continue
                operation["responses"].setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result
