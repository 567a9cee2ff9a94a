"""The page a clinician's browser gets when a launch, a callback or the app session fails: what happened and
what to do, in the app's style, instead of JSON. API clients keep problem+json (chosen by the Accept header)."""

from __future__ import annotations

from html import escape

# What to do, by problem type: relaunching fixes a session; the EHR admin fixes a registration.
_ADVICE = {
    "launch-failed": ("Launch the dictation app again from the patient's chart in the EHR. If it fails again, ask "
                      "the EHR administrator to check fhir-scribe's registration: its client id, its redirect URI "
                      "({public_url}/smart/callback) and the scopes it may ask for."),
    "invalid-token": ("Your dictation session has ended or is not valid in this browser. Launch the app again "
                      "from the patient's chart in the EHR."),
    "app-off": "The dictation app is not set up on this server. Ask the administrator of fhir-scribe.",
    "discovery-failed": ("fhir-scribe could not reach the EHR's sign-in service. Try again in a minute; if it keeps "
                         "failing, tell the EHR administrator."),
}
_DEFAULT = "Launch the app again from the EHR. If it keeps failing, tell the administrator the reference below."


def render(title: str, detail: str, slug: str, request_id: str | None, public_url: str | None) -> str:
    advice = _ADVICE.get(slug, _DEFAULT).format(public_url=public_url or "")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>fhir-scribe: {escape(title)}</title>\n"
        '<link rel="stylesheet" href="/app/static/app.css">\n</head>\n<body>\n<main>\n'
        f"<h1>{escape(title)}</h1>\n"
        f'<p role="alert" class="error">{escape(detail)}</p>\n'
        f"<p>{escape(advice)}</p>\n"
        f"<p><small>Reference: {escape(request_id or '-')}</small></p>\n"
        "</main>\n</body>\n</html>\n")
