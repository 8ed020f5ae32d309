"""The OpenAPI document of a real `zoomscape serve` describes what the server sends: every 4xx answer is
schema.ErrorBody ({error, detail: [{field, message}]}), and a schema-conformance fuzz run (schemathesis:
generated valid and invalid requests, every response checked against the document) passes."""
import json

import jsonschema_rs
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tests.helpers import job_request
from tests.helpers.backend_process import http_json, http_request

ERROR_REF = "#/components/schemas/ErrorBody"
FUZZ_EXAMPLES = 8  # per operation and phase: a few seconds in all


def test_every_4xx_answer_is_documented_as_the_error_body(server):
    status, doc = http_json("GET", server.url + "/openapi.json")
    assert status == 200
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ErrorBody"]["properties"]) == {"error", "detail"}
    assert schemas["ErrorBody"]["properties"]["detail"]["items"] == {"$ref": "#/components/schemas/FieldProblem"}
    assert set(schemas["FieldProblem"]["required"]) == {"field", "message"}
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(operations) == 7
    for path, method, op in operations:
        for code, response in op["responses"].items():
            if code.startswith("4"):
                assert response["content"] == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (path, code)
        if path != "/v1/health":
            assert "401" in op["responses"], (path, method)
    submit = doc["paths"]["/v1/jobs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobRequest"}
    assert {"401", "413", "422"} <= set(submit["responses"])
    assert schemas["JobRequest"]["additionalProperties"] is False and "cameras" in schemas["JobRequest"]["required"]
    seed = schemas["JobRequest"]["properties"]["seed"]
    assert (seed["type"], seed["minimum"], seed["exclusiveMaximum"]) == ("integer", 0, 2 ** 32)


def test_a_real_422_matches_the_documented_body(server):
    doc = http_json("GET", server.url + "/openapi.json")[1]
    req = job_request(1)
    req["cameras"][0]["width"] = "64"
    status, raw, headers = http_request("POST", server.url + "/v1/jobs", req)
    assert status == 422 and headers["content-type"] == "application/json"
    body = json.loads(raw)
    error_body = {**doc["components"]["schemas"]["ErrorBody"], "components": doc["components"]}
    jsonschema_rs.validate(error_body, body)
    assert body["detail"][0] == {"field": "cameras[0].width", "message": "must be an integer (got a string '64')"}


def app_document() -> dict:
    """The document create_app builds (the real server serves the same, see below)."""
    import tempfile
    from pathlib import Path

    from zoomscape.jobs import JobStore
    from zoomscape.server import create_app

    with tempfile.TemporaryDirectory() as tmp:
        return create_app(JobStore(Path(tmp)), "procedural").openapi()


DOCUMENT = app_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SchemathesisConfig.from_dict({
    "seed": 9,
    "generation": {"max-examples": FUZZ_EXAMPLES, "mode": "all"},
    # A schema-valid request may still break a rule JSON Schema cannot say (rigid matrices, names
    # that must match, ranges relative to the image size): 422 is then the right answer.
    "checks": {"positive_data_acceptance": {"enabled": False}},
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
}))


def test_the_server_serves_the_document_the_fuzz_run_uses(server):
    assert http_json("GET", server.url + "/openapi.json")[1] == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_documented_answers(idle, case):
    case.call_and_validate(base_url=idle.url, timeout=30)
