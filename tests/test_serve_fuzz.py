"""Schemathesis against the service's own OpenAPI schema: no generated request gets a 5xx."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from fittingroom.serve import create_app

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def app(tiny_run):
    from starlette.testclient import TestClient

    application = create_app(tiny_run)
    with TestClient(application):  # runs the app's startup (the micro-batcher) around the module's tests
        yield application


def fuzz(operation) -> list[int]:
    """Send generated requests for one operation; returns the status codes seen."""
    seen = []

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
        content_type = response.headers.get("content-type") or [""]  # header name -> list of values
        if response.status_code >= 400 and content_type[0].startswith("application/json"):
            assert "detail" in response.json()

    check()
    return seen


def test_no_generated_request_gets_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/predict", "GET /v1/model", "GET /healthz"}
    for operation in operations:
        assert fuzz(operation), f"no request was generated for {operation.method} {operation.path}"
