"""Depth and size limits on request bodies: every hostile body is the API's JSON 400 or 413."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from registry.api.parsers import MAX_JSON_DEPTH
from registry.api.serializers import JSONObjectField
from registry.models import TrainingJob

TRAIN = {"model_type": "xgboost", "symbol": "BTCUSDT", "timeframe": "1h"}


def nested(depth: int, kind: str = "dict") -> object:
    """A value whose lists or dicts nest `depth` levels deep (the outermost one included)."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return value


@pytest.fixture
def client(operator) -> APIClient:
    """A client that answers a server error with its 500 instead of raising it in the test."""
    operator.user_permissions.add(Permission.objects.get(codename="run_evolution"))
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(operator)
    return client


def post(client: APIClient, path: str, body: object, **extra: str):
    return client.generic("POST", path, json.dumps(body), content_type="application/json", **extra)


@pytest.mark.parametrize("field", ["params", "trigger_context"])
@pytest.mark.parametrize("depth", [JSONObjectField.MAX_DEPTH, 320, 500, 900])
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_deep_params_and_context_are_400(client, db, bar_add, field, depth, kind):
    """The body nests one level more than the field: at the field's limit, then far beyond."""
    bar_add("BTCUSDT")
    response = post(client, "/clm/train", {**TRAIN, field: {"x": nested(depth, kind)}})

    assert response.status_code == 400, response.content[:300]
    body = response.json()
    if depth + 2 > MAX_JSON_DEPTH:  # the body itself is too deep: the parser refuses it
        assert body["detail"] == f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels."
    else:
        assert body["code"] == "invalid"
        assert body["errors"] == {field: ["Nested deeper than 32 levels."]}
    assert not TrainingJob.objects.exists()


def test_a_context_at_the_depth_limit_is_accepted(client, db, bar_add):
    # trigger_context: params must be the trainer's own (unknown names are a 400 at the request).
    bar_add("BTCUSDT")
    context = {"x": nested(JSONObjectField.MAX_DEPTH - 1)}
    response = post(client, "/clm/train", {**TRAIN, "trigger_context": context})

    assert response.status_code == 202, response.content[:300]
    assert TrainingJob.objects.get().trigger_context["x"] == context["x"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/clm/events/manual_training", {**TRAIN, "params": {"x": nested(400)}}),
        ("/clm/events/regime_change", {"new_regime": "volatile", "symbol": nested(400)}),
        ("/clm/promote", {"model_id": nested(700, "list"), "version": 1, "reason": "r"}),
        ("/clm/evolution/runs", {**TRAIN, "search_space": {"max_depth": nested(600)}}),
    ],
)
def test_deep_bodies_anywhere_are_400(client, db, bar_add, path, body):
    bar_add("BTCUSDT")
    response = post(client, path, body)

    assert response.status_code == 400, response.content[:300]
    assert "nested deeper than" in response.json()["detail"]


def test_params_larger_than_the_limit_are_400(client, db, bar_add):
    bar_add("BTCUSDT")
    params = {"blob": "x" * JSONObjectField.MAX_BYTES}
    response = post(client, "/clm/train", {**TRAIN, "params": params})

    assert response.status_code == 400
    assert response.json()["errors"] == {"params": ["Larger than 65536 bytes as JSON."]}


def test_a_file_in_a_form_field_of_params_is_400(client, db, bar_add):
    bar_add("BTCUSDT")
    upload = SimpleUploadedFile("p.bin", b"\x00\x01", content_type="application/octet-stream")
    response = client.post("/clm/train", {**TRAIN, "params.x": upload}, format="multipart")

    assert response.status_code == 400, response.content[:300]
    assert "params" in response.json()["errors"]


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_over_the_upload_limit_is_a_json_413(client, db, settings, content_type, accept):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    if content_type == "application/json":
        data = json.dumps({**TRAIN, "params": {"blob": "x" * 20_000}})
    elif content_type.startswith("multipart"):
        boundary = "BoUnDaRy"
        content_type = f"multipart/form-data; boundary={boundary}"
        data = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="symbol"\r\n\r\n'
            f"{'x' * 20_000}\r\n--{boundary}--\r\n"
        )
    else:
        data = "symbol=" + "x" * 20_000
    response = client.generic(
        "POST", "/clm/train", data, content_type=content_type, HTTP_ACCEPT=accept
    )

    assert response.status_code == 413, response.content[:300]
    if accept == "text/html":  # the browsable API shows the same body
        assert b"Request body larger than 10000 bytes." in response.content
    else:
        assert response.json() == {
            "detail": "Request body larger than 10000 bytes.",
            "code": "too_large",
            "errors": {},
        }
    assert not TrainingJob.objects.exists()


def test_too_many_form_fields_is_a_json_400(client, db, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    data = "&".join(f"f{i}=1" for i in range(50))
    response = client.generic(
        "POST", "/clm/train", data, content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_fields"


@pytest.mark.parametrize("path", ["/clm/no-such-thing", "/clm/models/x/versions/1/nope", "/api/x"])
def test_unknown_api_paths_are_a_json_404(client, db, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found", "errors": {}}


def test_unknown_pages_elsewhere_keep_django_s_page(client, db):
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
