import httpx

from tests.integration.test_bad_requests import assert_problem


def test_sections_endpoint(server):
    text = "chief complaint cough for one week allergies no known drug allergies plan colon rest period"
    response = httpx.post(server.url + "/v1/sections", json={"text": text})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(s["category"], s["code"]) for s in body["sections"]] == [
        ("chief_complaint", "10154-3"), ("allergies", "48765-2"), ("plan", "18776-5")]
    assert body["text"] == "chief complaint cough for one week allergies no known drug allergies plan: rest."
    assert body["rendered_text"].startswith("Chief complaint\ncough for one week\n\nAllergies\nno known drug")
    assert body["rendered_xhtml"].startswith('<div xmlns="http://www.w3.org/1999/xhtml"><h3>Chief complaint</h3>')
    assert [c["spoken"] for c in body["dictation_commands"]] == ["colon", "period"]
    assert body["findings"][0] == {"text": "cough", "label": "SYMPTOM", "start": 16, "end": 21,
                                   "section": "chief_complaint", "negated": False, "historical": False,
                                   "family": False, "hypothetical": False, "uncertain": False}


def test_sections_bad_input(server):
    url = server.url + "/v1/sections"
    assert_problem(httpx.post(url, content=b'{"text": "unterminated', headers={"Content-Type": "application/json"}),
                   422, "invalid-request", "JSON decode error")
    assert_problem(httpx.post(url, json={"txt": "x"}), 422, "invalid-request", "body.text: Field required")
    assert_problem(httpx.post(url, json={"text": 42}), 422, "invalid-request", "body.text")
    assert_problem(httpx.post(url, json={"text": "a" * 200_001}), 422, "unprocessable", "the limit is 200000")
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_sections_validation_error_does_not_echo_the_input(server):
    response = httpx.post(server.url + "/v1/sections", json={"text": ["Jane Doe has chest pain"]})
    assert response.status_code == 422 and "Jane" not in response.text
