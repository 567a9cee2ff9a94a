"""Three replicas (processes) behind a real load balancer (Debian's HAProxy) on loopback, on sekmet-fhir and on
HAPI, under chaos: 40 concurrent dictations with Idempotency-Keys (8 of them also sent at the same instant straight
to two different replicas), 20 recordings each notified twice at the same instant to two replicas, a rolling
restart (SIGTERM each replica in turn, back on the same port) and one SIGKILL mid-run.

Required afterwards, on the FHIR server: every dictation a client had accepted (or got a draft for, and committed)
is exactly one note; every recording is exactly one note and exactly one completed Task; no identifier twice.
Throughput and latency (p50/p95) are printed (run with -s).

Clients behave as real ones: on a refused connection, a 502/504 from HAProxy, or a 503 (+ Retry-After) from a
busy or draining replica, the same request is sent again with the same Idempotency-Key after a pause, through the
balancer; a problem carrying a draft (the FHIR write failed) is committed with POST /v1/dictations/commit. The EHR
redelivers a notification it could not hand over (refused connection, 5xx).
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER
from tests.conftest import NO_AUTH, REPO, TEST_LIMITS, free_port
from tests.integration.test_subscriptions import backport, recording
from tests.support.balancer import Haproxy

REPLICAS = 3
DICTATIONS = 40
RACED_EVERY = 5  # every 5th key (8 of 40) is also posted at the same instant straight to two replicas
RECORDINGS = 20
DICTATION_SPACING_S = 1.3  # arrivals spread over ~52 s so the chaos happens under load
RECORDING_SPACING_S = 2.6
CHAOS_AT_S = 6.0
DRAIN_S = 25  # the default: below Kubernetes' 30 s grace period
LEASE_S = 15
SETTLE_S = 90  # after the load: Subscription work (lease take-overs included) must be done within this
CLIENT_DEADLINE_S = 240  # one dictation, all its attempts
SECRET = "replicas-secret-" + uuid.uuid4().hex
NOTIFY_HEADERS = {"X-Scribe-Secret": SECRET, "Content-Type": "application/fhir+json"}
DICTATION_SYSTEM = "urn:fhir-scribe:dictation"
JOBS = "urn:fhir-scribe:job"
FRESH = {"Cache-Control": "no-cache"}  # HAPI may cache search results; the verification must see fresh ones
FORM = {"patient": DEMO_PATIENT, "encounter": DEMO_ENCOUNTER, "author": f"Practitioner/{DEMO_PRACTITIONER}"}


# --- replicas ---------------------------------------------------------------------------------------------------

@dataclass
class Replica:
    name: str
    port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start on this replica's (fixed) port, appending to its log."""
        with self.log_path.open("ab") as log:
            log.write(f'{{"event": "test.spawn", "start": {self.starts + 1}, "port": {self.port}, '
                      f'"at": "{time.strftime("%H:%M:%S")}"}}\n'.encode())
            log.flush()
            self.process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready within {timeout_s} s:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def wait_exit(self, timeout_s: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            if self.wait_exit(DRAIN_S + 15) is None:
                self.process.kill()
                self.process.wait(timeout=10)

    def events(self) -> list[dict]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                found.append({"event": "non-json", "line": line[:300]})
        return found

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def replica_env(fhir_base: str, port: int) -> dict[str, str]:
    return {**os.environ, **NO_AUTH, **TEST_LIMITS,
            "SCRIBE_SERVER__PORT": str(port),
            "SCRIBE_FHIR__BASE_URL": fhir_base,
            "SCRIBE_SUBSCRIPTIONS__SECRET": SECRET,
            "SCRIBE_SUBSCRIPTIONS__QUERY": "DocumentReference?type=urn:test:fhir-scribe|dictation-recording"
                                           "&_sort=-_lastUpdated&_count=50",
            "SCRIBE_TRANSCRIPTION__NUM_WORKERS": "1",  # 3 replicas on 2 cores
            "SCRIBE_SUBSCRIPTIONS__LEASE_S": str(LEASE_S),
            "SCRIBE_SUBSCRIPTIONS__RECOVERY_INTERVAL_S": "2",
            "SCRIBE_SERVER__DRAIN_S": str(DRAIN_S)}


@pytest.fixture
def cluster(fhir_server, tmp_path):
    if os.environ.get("SCRIBE_TEST_ARTIFACTS"):  # logs kept where pytest's temp-dir rotation cannot delete them
        tmp_path = Path(os.environ["SCRIBE_TEST_ARTIFACTS"]) / f"replicas-{fhir_server.kind}-{uuid.uuid4().hex[:6]}"
        tmp_path.mkdir(parents=True)
    replicas = []
    for i in range(REPLICAS):
        port = free_port()
        replicas.append(Replica(f"r{i}", port, tmp_path / f"r{i}.log", replica_env(fhir_server.base, port)))
    balancer = Haproxy([(r.name, r.port) for r in replicas], tmp_path / "haproxy", balance="leastconn",
                       inter_ms=500, fall=1, rise=2, server_timeout_s=120)
    try:
        for replica in replicas:
            replica.spawn()
        for replica in replicas:
            replica.wait_ready()
        balancer.start()
        balancer.wait_for(up={r.name for r in replicas})
        yield replicas, balancer
    finally:
        balancer.stop()
        for replica in replicas:
            replica.stop()
        print(f"\n[replicas] logs in {tmp_path}")


# --- clients -----------------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What the clients saw (thread-safe)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter = field(default_factory=collections.Counter)  # "dictation 201", "notify 503"...
    transport_errors: collections.Counter = field(default_factory=collections.Counter)
    retries: int = 0
    drafts: int = 0
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (t, clock, what)

    def count(self, what: str) -> None:
        with self.lock:
            self.statuses[what] += 1

    def failed(self, what: str) -> None:
        with self.lock:
            self.transport_errors[what] += 1

    def retried(self) -> None:
        with self.lock:
            self.retries += 1

    def note(self, t0: float, what: str) -> None:
        with self.lock:
            self.timeline.append((round(time.monotonic() - t0, 1), time.strftime("%H:%M:%S"), what))


@dataclass
class Outcome:
    key: str
    party: str  # "lb", or the replica first addressed directly
    kind: str = "pending"  # written | committed | commit-conflict | gave-up | refused
    document_id: str | None = None
    requests: int = 0  # requests that carried this key (dictation posts and commits)
    latency_s: float | None = None
    detail: str = ""


def _pause(response: httpx.Response | None, attempt: int) -> float:
    if response is not None and response.headers.get("retry-after", "").isdigit():
        return min(float(response.headers["retry-after"]), 10.0) * random.uniform(0.5, 1.0)
    return min(0.5 * 2 ** attempt, 4.0) * random.uniform(0.5, 1.0)


def _served_by(response: httpx.Response, url: str) -> str:
    """The replica that answered: HAProxy's X-Served-By, or the port of a replica addressed directly."""
    return response.headers.get("x-served-by") or f"direct:{url.rsplit(':', 1)[-1]}"


def _problem(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def commit(lb: str, draft: dict, outcome: Outcome, tally: Tally, deadline: float) -> None:
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        outcome.requests += 1
        try:
            response = httpx.post(lb + "/v1/dictations/commit", json=draft, timeout=60)
        except httpx.TransportError as error:
            tally.failed(f"commit {type(error).__name__}")
            tally.retried()
            time.sleep(_pause(None, attempt))
            continue
        tally.count(f"commit {response.status_code}")
        if response.status_code in (200, 201):
            outcome.kind, outcome.document_id = "committed", response.json()["document_reference_id"]
            return
        if response.status_code == 409:  # a note with this key exists (e.g. the preliminary one landed after all)
            outcome.kind, outcome.detail = "commit-conflict", _problem(response).get("detail", "")[:200]
            return
        if response.status_code in (502, 503, 504):
            tally.retried()
            time.sleep(_pause(response, attempt))
            continue
        outcome.kind, outcome.detail = "refused", f"commit {response.status_code}: {response.text[:300]}"
        return
    outcome.kind, outcome.detail = "gave-up", "commit deadline"


def dictate(first_url: str, lb: str, key: str, audio: bytes, outcome: Outcome, tally: Tally,
            barrier: threading.Barrier | None) -> None:
    if barrier is not None:
        barrier.wait(timeout=60)
    started = time.monotonic()
    deadline = started + CLIENT_DEADLINE_S
    attempt = 0
    url = first_url
    while time.monotonic() < deadline:
        attempt += 1
        outcome.requests += 1
        response = None
        try:
            response = httpx.post(url + "/v1/dictations", files={"file": ("note.ogg", audio)}, data=FORM,
                                  headers={"Idempotency-Key": key}, timeout=130)
        except httpx.TransportError as error:
            tally.failed(f"dictation {type(error).__name__}")
        else:
            tally.count(f"dictation {response.status_code}")
            body = _problem(response)
            if response.status_code in (200, 201):
                outcome.kind, outcome.document_id = "written", body["document_reference_id"]
                break
            if isinstance(body.get("draft"), dict):  # the write failed: nothing lost, the client has the draft
                with tally.lock:
                    tally.drafts += 1
                outcome.detail = f"draft with {response.status_code} {body.get('type', '')}"
                commit(lb, body["draft"], outcome, tally, deadline)
                break
            if response.status_code not in (502, 503, 504):
                outcome.kind = "refused"
                outcome.detail = (f"{response.status_code} from {_served_by(response, url)} at "
                                  f"{time.strftime('%H:%M:%S')}: {response.text[:200]}")
                break
        tally.retried()
        url = lb  # a client knows the balancer; only the racing first attempt went to a replica directly
        time.sleep(_pause(response, attempt))
    else:
        outcome.kind = "gave-up"
    outcome.latency_s = time.monotonic() - started


def notify(first_url: str, lb: str, source: dict, fhir_base: str, payload: bool, tally: Tally,
           barrier: threading.Barrier, answers: list) -> None:
    """One delivery, as an EHR makes it: redelivered on a refused connection or a 5xx, through the balancer."""
    if payload:  # R4 rest-hook with payload: PUT {endpoint}/DocumentReference/{id} (as HAPI sends it)
        path, body, method = f"/fhir/notify/DocumentReference/{source['id']}", source, "PUT"
    else:  # Backport IG event notification, id-only
        path, method = "/fhir/notify", "POST"
        body = backport("event-notification", f"{fhir_base}/DocumentReference/{source['id']}")
    barrier.wait(timeout=60)
    url = first_url
    for attempt in range(1, 30):
        response = None
        try:
            response = httpx.request(method, url + path, json=body, headers=NOTIFY_HEADERS, timeout=30)
        except httpx.TransportError as error:
            tally.failed(f"notify {type(error).__name__}")
        else:
            tally.count(f"notify {response.status_code}")
            if response.status_code < 500:
                answers.append(f"{response.status_code} by {_served_by(response, url)} at {time.strftime('%H:%M:%S')}")
                return
        tally.retried()
        url = lb
        time.sleep(_pause(response, attempt))
    answers.append("gave-up")


# --- verification ------------------------------------------------------------------------------------------------

def search_all(base: str, resource_type: str, **params: str) -> list[dict]:
    """Every page of a search, fresh (no server-side result cache)."""
    found, url, query = [], f"{base}/{resource_type}", {**params, "_count": params.get("_count", "200")}
    while url:
        response = httpx.get(url, params=query, headers={**FRESH, "Accept": "application/fhir+json"}, timeout=60)
        assert response.status_code == 200, response.text[:500]
        bundle = response.json()
        found += [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
        url = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
        query = None
    return found


def identifiers(resource: dict, system: str) -> list[str]:
    return [i.get("value") for i in resource.get("identifier", []) if i.get("system") == system]


def job_key(source: dict) -> str:
    """The note identifier a Subscription job writes (service/subscriptions/jobs.py: "job:" + the Task's)."""
    return f"job:DocumentReference:{source['id']}:_history:{source['meta']['versionId']}"


def task_value(source: dict) -> str:
    return f"DocumentReference/{source['id']}/_history/{source['meta']['versionId']}"


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- the test ------------------------------------------------------------------------------------------------------

def test_three_replicas_behind_haproxy_under_restarts_and_a_kill(cluster, fhir_server, dictations):
    replicas, balancer = cluster
    lb = balancer.url
    audio_fixture = min(dictations, key=lambda d: len(d.audio))  # the shortest recording (~40 s)
    audio = audio_fixture.audio
    audio_s = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                    str(audio_fixture.path)], capture_output=True, text=True, check=True).stdout)
    run = uuid.uuid4().hex[:10]
    tally = Tally()

    sources = [recording(fhir_server, audio) for _ in range(RECORDINGS)]

    # The plan: who starts when, addressed where.
    keys = [f"replicas-{run}-{i:02d}" for i in range(DICTATIONS)]
    outcomes: dict[str, list[Outcome]] = {k: [] for k in keys}
    threads: list[threading.Thread] = []
    t0 = time.monotonic() + 1.0

    def at(offset: float, target, *args) -> threading.Thread:
        def run_later():
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            target(*args)
        thread = threading.Thread(target=run_later, daemon=True)
        threads.append(thread)
        return thread

    for i, key in enumerate(keys):
        offset = i * DICTATION_SPACING_S
        if i % RACED_EVERY == 0:  # the same key at the same instant: through the balancer and to two replicas
            barrier = threading.Barrier(3)
            parties = [("lb", lb), (replicas[i % 3].name, replicas[i % 3].url),
                       (replicas[(i + 1) % 3].name, replicas[(i + 1) % 3].url)]
        else:
            barrier, parties = None, [("lb", lb)]
        for party, url in parties:
            outcome = Outcome(key, party)
            outcomes[key].append(outcome)
            at(offset, dictate, url, lb, key, audio, outcome, tally, barrier)

    notified: dict[str, list] = {s["id"]: [] for s in sources}
    for j, source in enumerate(sources):
        barrier = threading.Barrier(2)
        for first in (replicas[j % 3], replicas[(j + 1) % 3]):
            at(0.5 + j * RECORDING_SPACING_S, notify, first.url, lb, source, fhir_server.base, j % 2 == 0, tally,
               barrier, notified[source["id"]])

    # Chaos, in its own thread: SIGTERM r0 (rolling restart 1/3), SIGKILL r1 mid-run, SIGTERM r1 (2/3), SIGTERM r2
    # (3/3); each replica back on its own port, and in HAProxy's rotation, before the next step.
    chaos_log: list[str] = []
    drain_exits: dict[str, float | None] = {}

    def chaos() -> None:
        time.sleep(max(0.0, t0 + CHAOS_AT_S - time.monotonic()))

        def restart(replica: Replica, sig: int, label: str) -> None:
            admitted = None
            try:
                admitted = httpx.get(replica.url + "/readyz", timeout=2).json().get("admitted_jobs")
            except (httpx.HTTPError, ValueError):
                pass
            tally.note(t0, f"{label} {replica.name} (admitted_jobs={admitted})")
            sent = time.monotonic()
            replica.signal(sig)
            code = replica.wait_exit(DRAIN_S + 30 if sig == signal.SIGTERM else 10)
            took = time.monotonic() - sent
            if code is None:
                chaos_log.append(f"{replica.name} did not exit {took:.0f} s after {label}: SIGKILLed")
                replica.signal(signal.SIGKILL)
                code = replica.wait_exit(10)
            if sig == signal.SIGTERM:
                drain_exits[replica.name] = round(took, 1)
            tally.note(t0, f"{replica.name} exited {code} after {took:.1f} s")
            replica.spawn()
            replica.wait_ready()
            balancer.wait_for(up={replica.name}, timeout_s=30)
            tally.note(t0, f"{replica.name} back in rotation")

        restart(replicas[0], signal.SIGTERM, "SIGTERM")
        time.sleep(2)
        restart(replicas[1], signal.SIGKILL, "SIGKILL")
        time.sleep(2)
        restart(replicas[1], signal.SIGTERM, "SIGTERM")
        time.sleep(2)
        restart(replicas[2], signal.SIGTERM, "SIGTERM")

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    for thread in threads:
        thread.start()
    chaos_thread.start()
    for thread in threads:
        thread.join(timeout=CLIENT_DEADLINE_S + 120)
    load_wall = time.monotonic() - t0
    chaos_thread.join(timeout=240)
    assert not chaos_thread.is_alive(), "the chaos sequence did not finish"

    # Subscription work settles: every recording's Task completed (lease take-overs included).
    deadline = time.monotonic() + SETTLE_S
    while True:
        tasks = {s["id"]: search_all(fhir_server.base, "Task", identifier=f"{JOBS}|{task_value(s)}") for s in sources}
        pending = {sid: [t["status"] for t in ts] for sid, ts in tasks.items()
                   if not ts or any(t["status"] != "completed" for t in ts)}
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    settle_wall = time.monotonic() - t0

    # --- what the FHIR server holds ---
    notes = search_all(fhir_server.base, "DocumentReference", subject=f"Patient/{DEMO_PATIENT}")
    by_identifier = collections.defaultdict(list)
    for note in notes:
        for value in identifiers(note, DICTATION_SYSTEM):
            by_identifier[value].append(note["id"])
    ours = set(keys) | {job_key(s) for s in sources}
    duplicates = {k: ids for k, ids in by_identifier.items() if k in ours and len(ids) > 1}
    all_tasks = [t for ts in tasks.values() for t in ts]
    tasks_by_value = collections.defaultdict(list)
    for task in all_tasks:
        for value in identifiers(task, JOBS):
            tasks_by_value[value].append((task["id"], task["status"]))

    problems: list[str] = []
    extra_audits = 0
    audits_per_note = collections.Counter()
    for key in keys:
        parties = outcomes[key]
        kinds = [o.kind for o in parties]
        found = by_identifier.get(key, [])
        accepted = [o for o in parties if o.kind in ("written", "committed", "commit-conflict")]
        if not accepted:
            problems.append(f"dictation {key}: no client got a note or a draft: "
                            f"{[(o.party, o.kind, o.detail) for o in parties]}")
        if len(found) != 1:
            problems.append(f"dictation {key}: {len(found)} notes {found} (clients: {kinds}, "
                            f"parties {[o.party for o in parties]})")
        answered = {o.document_id for o in parties if o.document_id}
        if len(answered) > 1 or (found and answered - set(found)):
            problems.append(f"dictation {key}: clients were told {answered}, the server has {found}")
        for doc_id in found:
            audits = search_all(fhir_server.base, "AuditEvent", entity=f"DocumentReference/{doc_id}")
            audits_per_note[len(audits)] += 1
            requests = sum(o.requests for o in parties)
            if not 1 <= len(audits) <= requests:
                problems.append(f"dictation {key}: {len(audits)} AuditEvents for DocumentReference/{doc_id} "
                                f"after {requests} client requests")
            extra_audits += max(0, len(audits) - 1)
    for source in sources:
        value, note_key = task_value(source), job_key(source)
        its_tasks = tasks_by_value.get(value, [])
        found = by_identifier.get(note_key, [])
        related = [n["id"] for n in notes if any(r.get("target", {}).get("reference") ==
                                                 f"DocumentReference/{source['id']}" for r in n.get("relatesTo", []))]
        if len(its_tasks) != 1 or its_tasks[0][1] != "completed":
            problems.append(f"recording {source['id']}: Tasks {its_tasks} (deliveries answered "
                            f"{notified[source['id']]})")
        if len(found) != 1 or sorted(related) != sorted(found):
            problems.append(f"recording {source['id']}: notes by identifier {found}, by relatesTo {related}")
        for task_id, _ in its_tasks:
            task = next(t for t in all_tasks if t["id"] == task_id)
            output = [o["valueReference"]["reference"] for o in task.get("output", [])]
            if found and output != [f"DocumentReference/{found[0]}"]:
                problems.append(f"recording {source['id']}: Task/{task_id} output {output}, notes {found}")
        for doc_id in found:
            audits = search_all(fhir_server.base, "AuditEvent", entity=f"DocumentReference/{doc_id}")
            audits_per_note[len(audits)] += 1
            if not audits:
                problems.append(f"recording {source['id']}: no AuditEvent for DocumentReference/{doc_id}")
            extra_audits += max(0, len(audits) - 1)
    for key, ids in duplicates.items():
        problems.append(f"DUPLICATE identifier {key}: DocumentReference {ids}")
    for value, found in tasks_by_value.items():
        if len(found) > 1 and any(value == task_value(s) for s in sources):
            problems.append(f"DUPLICATE Task identifier {value}: {found}")

    # --- figures ---
    latencies = [o.latency_s for ps in outcomes.values() for o in ps if o.party == "lb" and o.latency_s is not None]
    service_events = {r.name: collections.Counter(e.get("event") for e in r.events()) for r in replicas}
    jobs = {r.name: collections.Counter(e.get("outcome") for e in r.events() if e.get("event") == "subscription.job")
            for r in replicas}
    problems_logged = {r.name: collections.Counter((e.get("status"), e.get("type", "").rsplit(":", 1)[-1])
                                                   for e in r.events() if e.get("event") == "request.problem")
                       for r in replicas}
    written = {r.name: collections.Counter(str(e.get("created")) for e in r.events()
                                           if e.get("event") == "note.written") for r in replicas}
    lives = {}
    for r in replicas:
        life, per_life = "?", collections.defaultdict(collections.Counter)
        for e in r.events():
            name = e.get("event", "")
            if name == "test.spawn":
                life = f"{r.name}#{e['start']} from {e.get('at')}"
            elif name == "subscription.job":
                per_life[life][f"job {e.get('outcome')}"] += 1
            elif name.startswith(("subscription.", "drain.")) or name == "note.written":
                per_life[life][name] += 1
            elif name == "fhir.response" and e.get("status") == 409:
                per_life[life][f"FHIR 409 on {e.get('method')} {e.get('resource')}"] += 1
            elif "graceful shutdown exceeded" in name:
                per_life[life]["cancelled at exit: " + name.split()[1]] += 1
        lives.update({k: dict(v) for k, v in per_life.items()})
    lb_rows = balancer.requests_log()
    lb_status = collections.Counter(f"{row['server']} {row['status']}" for row in lb_rows)
    lb_terminations = collections.Counter(row["termination"] for row in lb_rows if row["termination"] != "----")
    transcriptions = sum(c["transcription.done"] for c in service_events.values())
    report = {
        "fhir": fhir_server.kind,
        "load wall (s, dictations)": round(load_wall, 1),
        "wall until Subscription work settled (s)": round(settle_wall, 1),
        "dictations/min (40 / load wall)": round(DICTATIONS / load_wall * 60, 1),
        "audio s per wall s (60 recordings' audio / settle wall)": round((DICTATIONS + RECORDINGS) * audio_s /
                                                                         settle_wall, 2),
        "transcriptions run (all replicas; 60 needed)": transcriptions,
        "latency p50/p95/max (s, per dictation incl. retries)": (
            round(statistics.median(latencies), 1), round(percentile(latencies, 95), 1), round(max(latencies), 1))
        if latencies else None,
        "client retries": tally.retries,
        "client statuses": dict(tally.statuses),
        "client transport errors": dict(tally.transport_errors),
        "503s seen by clients": sum(v for k, v in tally.statuses.items() if k.endswith(" 503")),
        "drafts returned": tally.drafts,
        "outcomes": collections.Counter(o.kind for ps in outcomes.values() for o in ps),
        "AuditEvents per note (count: notes)": dict(audits_per_note),
        "extra AuditEvents (replays audited)": extra_audits,
        "SIGTERM to exit (s)": drain_exits,
        "chaos": tally.timeline,
        "chaos anomalies": chaos_log,
        "haproxy server/status": dict(lb_status),
        "haproxy terminations": dict(lb_terminations),
        "subscription jobs per replica": {k: dict(v) for k, v in jobs.items()},
        "per replica life": lives,
        "recovered (lease take-overs)": {r: c["subscription.recovered"] for r, c in service_events.items()},
        "note.written created= per replica": {k: dict(v) for k, v in written.items()},
        "problems answered per replica": {k: {f"{s} {t}": n for (s, t), n in v.items()}
                                          for k, v in problems_logged.items()},
        "pending Subscription work at the end": pending,
    }
    print(f"\n[replicas] {fhir_server.kind}: " + json.dumps(report, indent=1, default=str))
    assert not problems, "\n".join(problems)
