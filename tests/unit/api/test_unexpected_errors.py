"""An unexpected exception still answers in the API's shape and carries the request id the client can quote
(the app runs in process; its start-up, which loads the model, is not needed for this)."""

from __future__ import annotations

from starlette.testclient import TestClient

from service.api.app import create_app
from service.config import load_settings


def _app_with_a_bug():
    app = create_app(load_settings(auth={"enabled": False}))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/boom", boom, methods=["GET"])
    app.add_api_route("/fhir/notify-boom", boom, methods=["GET"])
    return app


def test_a_500_carries_the_request_id():
    client = TestClient(_app_with_a_bug(), raise_server_exceptions=False)
    response = client.get("/v1/boom", headers={"X-Request-ID": "case-12345678"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "case-12345678" == response.json()["request_id"]
    assert "a bug" not in response.text


def test_a_500_on_the_fhir_facing_endpoint_is_an_operation_outcome():
    client = TestClient(_app_with_a_bug(), raise_server_exceptions=False)
    response = client.get("/fhir/notify-boom")
    assert response.status_code == 500 and response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["x-request-id"] in response.json()["issue"][0]["details"]["text"]
