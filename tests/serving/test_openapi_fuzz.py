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

from classifier.model_card import ModelCard
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
    # No shedding on event-loop lag: on a crowded machine the loop falls behind, the designed
    # 503 overloaded answers, and the fuzzer would report it as a server error. The shedding
    # has its own tests (test_admission.py, test_overload.py).
    app = create_app(make_settings(tiny_model_dir, max_loop_lag_ms=0))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_openapi_document_lists_the_contract_endpoints(api_schema: schemathesis.BaseSchema) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/livez", "/readyz", "/v1/model", "/v1/predict", "/metrics"} <= paths
    assert {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    } <= paths
    # Bodies the routes parse themselves are documented in full, not as dangling references.
    assert {"PredictJSONRequest", "InferenceRequest", "RequestInput"} <= set(
        api_schema.raw_schema["components"]["schemas"]
    )


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE


MODEL = "/v2/models/{model_name}"
VERSION = MODEL + "/versions/{model_version}"


# Negative (schema-violating) requests only exist for the POSTs: the GETs take no body. For the
# v2 model routes, "served" pins the path to the served model (and version), so the fuzzer gets
# past the 404 for an unknown name into the request handling itself.
@pytest.mark.parametrize(
    ("method", "path", "mode", "served"),
    [
        ("GET", "/livez", POSITIVE, False),
        ("GET", "/readyz", POSITIVE, False),
        ("GET", "/v1/model", POSITIVE, False),
        ("GET", "/metrics", POSITIVE, False),
        ("POST", "/v1/predict", POSITIVE, False),
        ("POST", "/v1/predict", NEGATIVE, False),
        ("GET", "/v2", POSITIVE, False),
        ("GET", "/v2/health/live", POSITIVE, False),
        ("GET", "/v2/health/ready", POSITIVE, False),
        ("GET", MODEL, POSITIVE, False),
        ("GET", MODEL, POSITIVE, True),
        ("GET", MODEL + "/ready", POSITIVE, True),
        ("GET", VERSION, POSITIVE, True),
        ("GET", VERSION + "/ready", POSITIVE, False),
        ("POST", MODEL + "/infer", POSITIVE, False),
        ("POST", MODEL + "/infer", POSITIVE, True),
        ("POST", MODEL + "/infer", NEGATIVE, True),
        ("POST", VERSION + "/infer", POSITIVE, True),
    ],
)
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema,
    card: ModelCard,
    method: str,
    path: str,
    mode: GenerationMode,
    served: bool,
) -> None:
    wait_until_ready(api_schema)
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if served:
        pinned = {"model_name": card.name, "model_version": card.version}

        def serve(case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
            case.path_parameters = {k: pinned[k] for k in case.path_parameters or {}}
            return case

        strategy = strategy.map(serve)

    @given(case=strategy)
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
