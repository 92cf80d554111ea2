"""Property-based API test: schemathesis generates requests from the service's own OpenAPI
document (in-process over ASGI, bounded examples) and checks that nothing is a server error and
every response matches the documented status codes, content types, headers and schemas."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from classifier.serving.app import create_app

from .conftest import make_settings

EXAMPLES_PER_OPERATION = 30


def wait_until_ready(schema: schemathesis.BaseSchema) -> None:
    """Block until /readyz says 200. schemathesis's pytest plugin ends every ASGI lifespan at
    each test's teardown and the next call starts a new one (production set-up: the model loads
    in the background), so every test must wait, not only the first; without it, a slow machine
    sees 503 model_not_ready from predict and the fuzzer calls it a server error."""
    readyz = schema["/readyz"]["GET"]
    deadline = time.monotonic() + 30
    while readyz.Case().call().status_code != 200:
        assert time.monotonic() < deadline, "the service did not become ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir: Path) -> schemathesis.BaseSchema:
    app = create_app(make_settings(tiny_model_dir))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_openapi_document_lists_the_contract_endpoints(api_schema: schemathesis.BaseSchema) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/livez", "/readyz", "/v1/model", "/v1/predict", "/metrics"} <= paths


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE


# Negative (schema-violating) requests only exist for predict: the GETs take no input.
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        ("GET", "/livez", POSITIVE),
        ("GET", "/readyz", POSITIVE),
        ("GET", "/v1/model", POSITIVE),
        ("GET", "/metrics", POSITIVE),
        ("POST", "/v1/predict", POSITIVE),
        ("POST", "/v1/predict", NEGATIVE),
    ],
)
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    wait_until_ready(api_schema)
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: schemathesis.Case[Any]) -> None:
        # positive_data_acceptance is left out on purpose: bytes that satisfy the schema
        # ("format: binary") are mostly not images, and refusing them (415/422) is right.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    check()
