"""The OpenAPI schema matches what the server answers: schemathesis, every check, on the WSGI app.

Each operation gets a bounded number of generated requests (positive and negative) with an
operator's token; every response is checked for status codes, content types, headers and bodies
the schema documents, server errors, accepted invalid data, auth that is ignored, and more.

Acceptance of schema-valid data (`positive_data_acceptance`) is not checked where acceptance
depends on rows a schema cannot describe: training and events need stored bars or a registered
model, experiments and shadows need versions in the right status, results need the experiment's
bars. Those operations answer 400/404/409 with field messages for such requests (tested in their
own modules); every other check still runs on them.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth.models import Permission, User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks as oc

from registry.artifacts import artifact_save
from registry.models import ModelStatus
from tests.conftest import version_add

MODEL = "xgboost-btcusdt-1h"
EXAMPLES = 3
CHECKS = [
    not_a_server_error, oc.status_code_conformance, oc.content_type_conformance,
    oc.response_headers_conformance, oc.response_schema_conformance, oc.negative_data_rejection,
    oc.positive_data_acceptance, oc.missing_required_header, oc.unsupported_method,
    oc.ignored_auth,
]  # fmt: skip
DATA_DEPENDENT = {
    "POST /clm/train", "POST /clm/events/drift_detected", "POST /clm/events/performance_degraded",
    "POST /clm/events/regime_change", "POST /clm/events/manual_training", "POST /clm/experiments",
    "POST /clm/shadow", "POST /clm/models/{model_id}/results",
    "POST /clm/models/{model_id}/predict", "POST /clm/rollback", "POST /clm/promote",
    "POST /clm/evolution/runs",
    "POST /clm/candidates/propose", "POST /clm/candidates/{candidate_id}/mutate",
    "POST /clm/candidates/crossover", "POST /clm/candidates/{candidate_id}/select",
}  # fmt: skip

schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())


@pytest.fixture
def same_connection():
    """Keep the test's database connection across requests, as Django's test client does: the
    handler would close it at the end of each request and lose the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(db, same_connection) -> str:
    user = User.objects.create_user("schemathesis", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["request_training", "promote_modelversion", "run_evolution"]
        )
    )
    stored = artifact_save(model_id=MODEL, blob=b"not a model")
    version_add(status=ModelStatus.PRODUCTION, artifact=stored)
    version_add(status=ModelStatus.CANDIDATE)
    return Token.objects.create(user=user).key


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same requests on every run: a failure is reproducible
    suppress_health_check=list(HealthCheck),
)
def test_answers_match_the_schema(case, token):
    excluded = [oc.positive_data_acceptance] if case.operation.label in DATA_DEPENDENT else []
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"}, checks=CHECKS, excluded_checks=excluded
    )
