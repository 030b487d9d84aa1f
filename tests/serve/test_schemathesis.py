"""The API against its own OpenAPI schema (schemathesis, bounded in examples): no 5xx, every
response in the schema's statuses and shapes, malformed input refused. Derandomised in CI."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from serving import spec

from divqat.serve.app import create_app
from divqat.serve.payload import Limits
from divqat.serve.ratelimit import RateLimit

KEY = "fuzz-key-0001-0123456789abcdef0123"
EXAMPLES = 30
# JSON Schema cannot say that images_b64 holds exactly 4 x N x C x H x W bytes of `shape`, so a
# schema-valid binary body may rightly be refused (422): that one check is left out.
UNSATISFIABLE = [positive_data_acceptance]


@pytest.fixture(scope="module")
def api_schema(victim_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "keys.db"
    app = create_app(
        victim_dir, db, keys=[spec(KEY, 10**9)], limits=Limits(max_batch=2, max_body_bytes=2**20),
        rate=RateLimit(0, 0),  # the fuzzer is one client sending as fast as it can
    )  # fmt: skip
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_schema(api_schema, mode):
    """Every operation, EXAMPLES cases each, schema-valid and schema-violating, under every check
    schemathesis has (but the one above); a failure names the case and its curl line."""
    checked = []
    for operation in operations(api_schema):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def run(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=UNSATISFIABLE)
            checked.append(case.operation.label)

        try:
            run()
        except Unsatisfiable:  # an operation with no input (GET /healthz) has no schema-violating case
            assert mode is GenerationMode.NEGATIVE and not operation.body
    wanted = {"POST /v1/predict"} | ({"GET /v1/usage", "GET /v1/model"} if mode is GenerationMode.POSITIVE else set())
    assert wanted <= set(checked), set(checked)
    print(f"schemathesis {mode.value}: {len(checked)} cases over {len(set(checked))} operations, no failure")
