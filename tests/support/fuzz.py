"""Property-based fuzzing of fhir-scribe's OpenAPI schema with schemathesis, against the service over HTTP.

Used by tests/integration/test_fuzz.py. schemathesis turns each operation of the running service's /openapi.json
into Hypothesis strategies (positive: data the schema allows; negative: data it forbids); every generated request
is sent to the real process and each answer must be:

* never a 5xx (schemathesis' own `not_a_server_error`),
* within the operation's time budget (generous: a 2-core machine, and the audio routes may decode),
* an error in the documented shape: ``application/problem+json`` (RFC 9457, ``status`` = the HTTP status) on every
  4xx, except the FHIR-facing Subscription endpoint (``/fhir/notify...``), which answers a FHIR OperationOutcome
  as ``application/fhir+json``; and a redirect only where the SMART launch redirects (302, 303).

Failures are collected rather than raised at the first one, so one run names every distinct failure (operation,
status or check, the exception type the service logged, a curl line to reproduce it); the test asserts there are
none. Generation is reproducible: Hypothesis runs derandomized (a seed derived from the test, no example
database), so the same code sends the same requests.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.core.transport import Response

NOTIFY = "/fhir/notify"  # the FHIR-facing routes: OperationOutcome, application/fhir+json
FHIR_JSON = "application/fhir+json"
PROBLEM_JSON = "application/problem+json"
# The SMART launch routes redirect the browser: /smart/launch to the EHR's authorize (302), /smart/callback to
# the page (303). No other route redirects.
REDIRECTS: dict[str, set[int]] = {"/smart/launch": {302}, "/smart/callback": {303}}
# Routes that read an audio upload: they may decode (and refuse) what they were sent, so a larger budget.
AUDIO_ROUTES = {"/v1/audio/transcriptions", "/v1/dictations", "/v1/dictations/draft"}
BUDGET_S = 10.0  # every other operation
AUDIO_BUDGET_S = 60.0
# Nothing is excluded: the schema holds no HTML page and no /metrics (the SMART app's page, /app/, is not in it).
EXCLUDED: dict[str, str] = {}

# The Subscription endpoint reads its body itself (it may be empty, a resource, or a Backport Bundle), so the
# service's schema declares none. Described here so the fuzzer sends notifications too: positive data follows
# the shapes service/subscriptions/notifications.py reads, negative data breaks them.
_REFERENCE = {"type": "object", "properties": {"reference": {"type": "string"}}}
_PARAMETERS = {
    "type": "object",
    "required": ["resourceType", "parameter"],
    "properties": {
        "resourceType": {"const": "Parameters"},
        "parameter": {"type": "array", "maxItems": 4, "items": {
            "type": "object",
            "properties": {
                "name": {"enum": ["type", "notification-event", "status"]},
                "valueCode": {"enum": ["handshake", "heartbeat", "event-notification", "query-status",
                                       "query-event"]},
                "part": {"type": "array", "maxItems": 3, "items": {
                    "type": "object",
                    "properties": {"name": {"enum": ["focus", "event-number"]}, "valueReference": _REFERENCE},
                }},
            },
        }},
    },
}
_RECORDING = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"enum": ["DocumentReference", "Media", "Binary"]},
        "id": {"type": "string"},
        "contentType": {"type": "string"},
        "data": {"type": "string"},
        "subject": _REFERENCE,
        "author": {"type": "array", "maxItems": 2, "items": _REFERENCE},
        "content": {"type": "array", "maxItems": 2, "items": {
            "type": "object",
            "properties": {"attachment": {"type": "object", "properties": {
                "contentType": {"type": "string"}, "data": {"type": "string"}, "url": {"type": "string"}}}},
        }},
    },
}
NOTIFICATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "required": ["resourceType", "type", "entry"],
            "properties": {
                "resourceType": {"const": "Bundle"},
                "type": {"const": "history"},
                "entry": {"type": "array", "maxItems": 3, "items": {
                    "type": "object",
                    "properties": {"fullUrl": {"type": "string"}, "resource": {"anyOf": [_PARAMETERS, _RECORDING]}},
                }},
            },
        },
        _RECORDING,
    ],
}


def with_notification_bodies(raw: dict[str, Any]) -> dict[str, Any]:
    """The service's schema, with a request body described for its Subscription endpoint's operations."""
    patched = copy.deepcopy(raw)
    for path, operations in patched["paths"].items():
        if not path.startswith(NOTIFY):
            continue
        for method in ("post", "put"):
            if method in operations:
                operations[method].setdefault("requestBody", {
                    "required": False, "content": {FHIR_JSON: {"schema": NOTIFICATION_SCHEMA}}})
    return patched


JSON_MEDIA = re.compile(r"^application/([\w.-]+\+)?json$")


def json_operations(raw: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of the operations whose request body is JSON."""
    return {(method.upper(), path) for path, operations in raw["paths"].items()
            for method, operation in operations.items()
            if any(JSON_MEDIA.match(m) for m in ((operation.get("requestBody") or {}).get("content") or {}))}


# Lone UTF-16 surrogates: valid in JSON text as \u escapes (RFC 8259 s8.2 allows them, parsers accept them) but
# not encodable as UTF-8, so a string holding one breaks whatever later encodes it. schemathesis never generates
# them (it must put its strings on the wire as UTF-8); its JSON serializer escapes them, so they arrive as sent.
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800"]


def with_hostile_strings(schema: schemathesis.BaseSchema, json_ops: set[tuple[str, str]]) -> None:
    """Let a quarter of the JSON bodies generated for `schema` carry a lone surrogate in one of their strings."""
    from hypothesis import strategies as st

    @schema.hook
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> Any:
        operation = context.operation
        leaves = list(_string_leaves(body)) if operation and (operation.method.upper(), operation.path) in json_ops \
            else []
        if not leaves:
            return st.just(body)
        mutated = st.builds(_inject, st.just(body), st.sampled_from(leaves), st.sampled_from(LONE_SURROGATES),
                            st.floats(0, 1))
        return st.integers(0, 3).flatmap(lambda pick: mutated if pick == 0 else st.just(body))


def _string_leaves(value: Any, path: tuple = ()) -> Iterable[tuple]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))


def _inject(body: Any, path: tuple, surrogate: str, where: float) -> Any:
    def put(value: Any, rest: tuple) -> Any:
        if not rest:
            at = int(len(value) * where)
            return value[:at] + surrogate + value[at:]
        if isinstance(value, dict):
            return {**value, rest[0]: put(value[rest[0]], rest[1:])}
        return [put(item, rest[1:]) if i == rest[0] else item for i, item in enumerate(value)]

    return put(body, path)


FORGED_BEARER = "x-forged-bearer"


def with_forged_credentials(raw: dict[str, Any], secret_header: str) -> dict[str, Any]:
    """The schema with the credentials every operation may be sent, as parameters for the fuzzer to forge: an
    Authorization header (format FORGED_BEARER), the Subscription secret header, the SMART app's session cookie
    and CSRF header."""
    patched = with_notification_bodies(raw)
    forged = [
        {"name": "Authorization", "in": "header", "required": True,
         "schema": {"type": "string", "format": FORGED_BEARER}},
        {"name": secret_header, "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "scribe_session", "in": "cookie", "required": False, "schema": {"type": "string"}},
        {"name": "X-CSRF-Token", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    for operations in patched["paths"].values():
        for operation in operations.values():
            operation["parameters"] = [*operation.get("parameters", []), *copy.deepcopy(forged)]
    return patched


def register_forged_bearer(issuers: list[str], audiences: list[str]) -> None:
    """Authorization values an attacker would try: other schemes, junk, and JWTs whose header and claims have the
    expected names with values of every JSON type (some naming the trusted issuer and audience, so they get as
    far as key selection and signature checking; none is signed by the issuer)."""
    import base64

    from hypothesis import strategies as st

    printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
    b64 = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), max_size=60)
    json_value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6)

    def claim(*likely: Any) -> st.SearchStrategy[Any]:
        return st.sampled_from(likely) | json_value if likely else json_value

    future, past = 4102444800, 946684800  # 2100 and 2000: fixed, so the same seed forges the same tokens
    header = st.fixed_dictionaries({}, optional={
        "alg": claim("RS384", "RS256", "ES256", "ES384", "none", "HS256", "PS256"),
        "kid": claim("unknown-kid", ""), "typ": claim("JWT", "at+jwt"), "crit": claim(["exp"]),
        "jku": claim("http://127.0.0.1:9/jwks"), "cty": claim("JWT")})
    claims = st.fixed_dictionaries({}, optional={
        "iss": claim(*issuers, *(i + "/" for i in issuers), "http://127.0.0.1:9/untrusted"),
        "aud": claim(*audiences, list(audiences), "urn:other"), "exp": claim(future, past, 0, 2**63),
        "nbf": claim(future, past), "iat": claim(past), "sub": claim("someone"),
        "scope": claim("patient/*.rs launch", ""), "scp": claim(["patient/Patient.r"]),
        "patient": claim("demo-patient"), "encounter": claim("demo-encounter"),
        "fhirUser": claim("Practitioner/demo-practitioner", "https://ehr/fhir/Practitioner/x", "/", "a/b/c"),
        "client_id": claim("scribe-app")})

    def segment(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    jwt_like = st.builds(lambda h, c, sig: f"{segment(h)}.{segment(c)}.{sig}", header, claims, b64)
    token = st.one_of(jwt_like, b64, printable, st.lists(b64, min_size=1, max_size=5).map(".".join))
    scheme = st.sampled_from(["Bearer", "Bearer", "Bearer", "bearer", "BEARER", "Basic", "DPoP", ""])
    separator = st.sampled_from([" ", " ", "  ", "\t", ", Bearer x ", ""])
    schemathesis.openapi.format(FORGED_BEARER, st.builds(lambda a, b, c: f"{a}{b}{c}".strip(), scheme, separator,
                                                         token))


# ---------------------------------------------------------------- checks


def budget_s(path: str) -> float:
    return AUDIO_BUDGET_S if path in AUDIO_ROUTES else BUDGET_S


@schemathesis.check
def error_format(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """problem+json on 4xx (OperationOutcome as fhir+json on the FHIR-facing routes); redirects only from SMART."""
    status = response.status_code
    content_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
    path = case.operation.path
    if 300 <= status < 400:
        if status not in REDIRECTS.get(path, set()):
            raise AssertionError(f"unexpected redirect {status} from {path}")
        return True
    if not 400 <= status < 500:
        return None
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        body = None
    if path.startswith(NOTIFY):
        if content_type != FHIR_JSON:
            raise AssertionError(f"{status} from a FHIR-facing route is {content_type!r}, not {FHIR_JSON}")
        if not (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" and body.get("issue")):
            raise AssertionError(f"{status} from a FHIR-facing route is not an OperationOutcome")
        return True
    if content_type != PROBLEM_JSON:
        raise AssertionError(f"{status} is {content_type!r}, not {PROBLEM_JSON}")
    if not (isinstance(body, dict) and body.get("status") == status and body.get("type") and body.get("title")):
        raise AssertionError(f"{status} is not an RFC 9457 problem document with type, title and status {status}")
    return True


def within_budget(elapsed_s: float, path: str) -> None:
    if elapsed_s > budget_s(path):
        raise AssertionError(f"answered in {elapsed_s:.1f} s; the budget is {budget_s(path):g} s")


# ---------------------------------------------------------------- running


@dataclass
class Found:
    """One distinct failure, with the first request that showed it."""

    operation: str
    what: str  # the check's message, or the HTTP status
    exc_type: str | None  # the exception the service logged (request.failed), when it logged one
    curl: str
    status: int | None
    count: int = 1
    note: str = ""  # what was mutated, for a mutated real request

    def key(self) -> tuple[str, str, str | None]:
        return self.operation, self.what, self.exc_type


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=dict)  # "pass METHOD /path mode" -> requests
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # operation label -> status -> count
    found: dict[tuple[str, str, str | None], Found] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # generation errors (a schema the fuzzer cannot use)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def add(self, failure: Found) -> None:
        seen = self.found.get(failure.key())
        if seen is None:
            self.found[failure.key()] = failure
        else:
            seen.count += 1

    def report(self) -> str:
        lines = ["", f"schemathesis {schemathesis.__version__}: {self.total} generated requests"]
        width = max((len(k) for k in self.sent), default=0)
        for key, n in self.sent.items():
            lines.append(f"  {key:<{width}}  {n:>4}")
        lines.append("statuses per operation:")
        for label, statuses in self.statuses.items():
            lines.append(f"  {label}: " + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items())))
        for error in self.errors:
            lines.append(f"generation error: {error}")
        lines.append(f"{len(self.found)} distinct failures" + (":" if self.found else ""))
        for f in self.found.values():
            lines.append(f"- {f.operation}: {f.what}" + (f" [{f.exc_type}]" if f.exc_type else "")
                         + f" (x{f.count})" + (f"\n    first seen with {f.note}" if f.note else "")
                         + f"\n    {f.curl}")
        return "\n".join(lines)


class ServiceLog:
    """The exception type the service logged (request.failed, exc_type) while it answered a request. Requests are
    sent one at a time, so the lines the log gained meanwhile are that request's (a 500's log line carries no
    request id to match it by)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size

    def exc_type(self, since: int, wait_s: float = 1.0) -> str | None:
        deadline = time.monotonic() + wait_s
        while True:
            with self.path.open("rb") as log:
                log.seek(since)
                for line in log.read().decode(errors="replace").splitlines():
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("event") == "request.failed":
                        return entry.get("exc_type")
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "$SECRET")
    return re.sub(r"\s+", " ", text)[:1500]


def fuzz_operations(schema: schemathesis.BaseSchema, *, base_url: str, pass_name: str, headers: dict[str, str],
                    cookies: dict[str, str], examples: Callable[[str, GenerationMode], int], tally: Tally,
                    log: ServiceLog, extra_check: Callable[[Case, Response], None] | None = None) -> None:
    """Every operation of `schema`, positive then negative, `examples(path, mode)` generated requests at most
    (Hypothesis stops early where an operation has fewer distinct inputs, e.g. none to make negative)."""
    session = requests.Session()
    secrets = [*headers.values(), *cookies.values()]
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in EXCLUDED:
            continue
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            limit = examples(operation.path, mode)
            if limit <= 0:
                continue
            key = f"{pass_name} {label} {mode.value}"
            tally.sent[key] = 0

            send = _sender(operation_label=label, key=key, base_url=base_url, session=session, headers=headers,
                           cookies=cookies, tally=tally, log=log, extra_check=extra_check, secrets=secrets)
            try:
                strategy = operation.as_strategy(generation_mode=mode)
            except Exception as exc:
                del tally.sent[key]
                if mode is GenerationMode.POSITIVE:
                    tally.errors.append(f"{key}: {type(exc).__name__}: {str(exc)[:300]}")
                continue  # schemathesis has nothing negative to make of this operation
            test = settings(max_examples=limit, derandomize=True, database=None, deadline=None,
                            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                            report_multiple_bugs=False)(given(case=strategy)(_generated(send)))
            try:
                test()
            except Unsatisfiable:
                if mode is GenerationMode.NEGATIVE and tally.sent[key] == 0:
                    del tally.sent[key]  # no negative input for an operation without parameters
                else:
                    tally.errors.append(f"{key}: could only generate {tally.sent[key]} requests")


def _generated(send: Callable[[Case, str], None]) -> Callable[[Case], None]:
    def run(case: Case) -> None:
        send(case, "")

    return run


# ---------------------------------------------------------------- mutating a real request


def _json_values() -> Any:
    from hypothesis import strategies as st

    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6)


def mutated(seed: Any) -> Any:
    """A strategy of (`seed` with one or two of its nodes mutated, what was done): a node given a value of another
    JSON type, a lone surrogate in a string, grown (a string or list repeated up to 50 times), dropped, or emptied."""
    from hypothesis import strategies as st

    nodes = {p: v for p, v in _nodes(seed) if p}
    strings = [p for p, v in nodes.items() if isinstance(v, str)]
    shallow = [p for p in strings if len(p) <= 2]  # the document's own fields, not buried in lists of parts
    sized = [p for p, v in nodes.items() if isinstance(v, (str, list))]

    def mutation(kind: str, paths: list[tuple]) -> Any:
        return st.tuples(st.sampled_from(paths), st.just(kind), _json_values(), st.sampled_from(LONE_SURROGATES),
                         st.floats(0, 1), st.integers(2, 50))

    kinds = (("retype", list(nodes)), ("surrogate", strings), ("surrogate", shallow), ("grow", sized),
             ("drop", list(nodes)), ("empty", list(nodes)))
    one = st.one_of(*[mutation(kind, paths) for kind, paths in kinds if paths])
    return st.lists(one, min_size=1, max_size=2).map(lambda ms: (_mutate(seed, ms), _describe(ms)))


def _describe(mutations: list[tuple]) -> str:
    """'retype context.patient -> 12; surrogate text' (what a mutation did, for the report)."""
    parts = []
    for path, kind, other, surrogate, _, times in mutations:
        where = ".".join(str(step) for step in path)
        detail = {"retype": f" -> {json.dumps(other)[:60]}", "surrogate": f" ({ascii(surrogate)})",
                  "grow": f" x{times}"}.get(kind, "")
        parts.append(f"{kind} {where}{detail}")
    return "; ".join(parts)


def _nodes(value: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    for node in _node_paths(value, path):
        target = value
        for step in node:
            target = target[step]
        yield node, target


def _node_paths(value: Any, path: tuple = ()) -> Iterable[tuple]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _node_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):  # the first few items of a list stand for the rest
            yield from _node_paths(item, (*path, index))


def _mutate(seed: Any, mutations: list[tuple]) -> Any:
    document = copy.deepcopy(seed)
    for path, kind, other, surrogate, where, times in mutations:
        parent = document
        try:
            for step in path[:-1]:
                parent = parent[step]
            value = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this node
        last = path[-1]
        if kind == "drop":
            del parent[last]
            continue
        if kind == "surrogate" and isinstance(value, str):
            at = int(len(value) * where)
            new = value[:at] + surrogate + value[at:]
        elif kind == "grow" and isinstance(value, (str, list)):
            new = value * times if value else (" " * times if isinstance(value, str) else [None] * times)
        elif kind == "empty":
            new = type(value)() if isinstance(value, (str, list, dict)) else None
        else:
            new = other
        parent[last] = new
    return document


def fuzz_seeded(operation: Any, seed: Any, *, count: int, base_url: str, pass_name: str, headers: dict[str, str],
                cookies: dict[str, str], tally: Tally, log: ServiceLog,
                prepare: Callable[[Any, int], Any] = lambda body, n: body) -> None:
    """`count` mutations of a real request body (`seed`) to `operation`, sent and checked like generated ones.
    `prepare(body, n)` adapts each (e.g. a fresh identifier, so one accepted write does not conflict with the next)."""
    label = f"{operation.method.upper()} {operation.path}"
    key = f"{pass_name} {label} mutated"
    tally.sent[key] = 0
    send = _sender(operation_label=label, key=key, base_url=base_url, session=requests.Session(), headers=headers,
                   cookies=cookies, tally=tally, log=log, extra_check=None,
                   secrets=[*headers.values(), *cookies.values()])

    def run(example: tuple[Any, str]) -> None:
        body, mutation = example
        send(operation.Case(body=prepare(body, tally.sent[key]), media_type="application/json"), note=mutation)

    settings(max_examples=count, derandomize=True, database=None, deadline=None,
             suppress_health_check=list(HealthCheck), phases=[Phase.generate])(given(mutated(seed))(run))()


def _sender(*, operation_label: str, key: str, base_url: str, session: requests.Session, headers: dict[str, str],
            cookies: dict[str, str], tally: Tally, log: ServiceLog,
            extra_check: Callable[[Case, Response], None] | None, secrets: list[str]) -> Callable[[Case], None]:
    """Sends one generated case and records what the checks say of the answer."""

    def send(case: Case, note: str) -> None:
        timeout = budget_s(case.operation.path) * 2
        log_at = log.mark()
        started = time.monotonic()
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, cookies=cookies,
                                 timeout=timeout, allow_redirects=False)
        except requests.exceptions.InvalidHeader:
            return  # a header value no HTTP client can send (e.g. a control character): not a request
        except requests.RequestException as exc:
            session.cookies.clear()
            tally.sent[key] += 1
            tally.add(Found(operation_label, f"no answer: {type(exc).__name__}", None,
                            redact(_curl(case, headers, base_url), secrets), None, note=note))
            return
        elapsed = time.monotonic() - started
        session.cookies.clear()  # every request carries the given cookies only, not what an answer set
        tally.sent[key] += 1
        status = response.status_code
        counts = tally.statuses.setdefault(operation_label, {})
        counts[status] = counts.get(status, 0) + 1
        problems = []
        try:
            case.validate_response(response, checks=[not_a_server_error, error_format], headers=headers)
        except (AssertionError, BaseExceptionGroup) as failed:
            problems += _messages(failed, status)
        try:
            within_budget(elapsed, case.operation.path)
            if extra_check is not None:
                extra_check(case, response)
        except AssertionError as failed:
            problems.append(str(failed))
        if problems:
            exc_type = log.exc_type(log_at) if status >= 500 else None
            for problem in dict.fromkeys(problems):
                tally.add(Found(operation_label, problem, exc_type, redact(_curl(case, headers, base_url), secrets),
                                status, note=note))

    return send


def _messages(failed: BaseException, status: int) -> list[str]:
    if isinstance(failed, BaseExceptionGroup):
        return [m for exc in failed.exceptions for m in _messages(exc, status)]
    if isinstance(failed, Failure):
        if status >= 500 and failed.title.lower().startswith("server error"):
            return [f"server error {status}"]
        detail = [line for line in (failed.message or "").splitlines() if line.strip()]
        return [f"{failed.title}: {detail[0]}" if detail else failed.title]
    return [str(failed).splitlines()[0]]


def _curl(case: Case, headers: dict[str, str], base_url: str) -> str:
    try:
        return case.as_curl_command(headers=headers, base_url=base_url)
    except Exception as exc:  # a body curl cannot show: say what was sent
        return f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300} ({exc})"


def load(raw: dict[str, Any]) -> schemathesis.BaseSchema:
    """A schemathesis schema that shows generated credentials in its curl lines (forged ones are the point of the
    forged pass); the real secrets are replaced by $SECRET in the report instead (`redact`)."""
    config = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})
    return schemathesis.openapi.from_dict(raw, config=config)


def openapi_document(base_url: str) -> dict[str, Any]:
    response = httpx.get(base_url + "/openapi.json", timeout=30)
    response.raise_for_status()
    return response.json()
