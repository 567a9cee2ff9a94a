"""A fault-injecting HTTP proxy in front of a real FHIR server: forwards everything, except that the test can
make the next requests fail (a status), hang (a delay) or hit a closed port. Runs in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Faults:
    fail_next: int = 0  # answer this many matching requests with `status` instead of forwarding
    pass_first: int = 0  # ... after forwarding this many matching requests unharmed
    status: int = 503
    retry_after: str | None = None  # the Retry-After header of an injected failure
    delay_s: float = 0.0  # wait this long before forwarding matching requests
    only_method: str | None = "POST"  # which requests the faults apply to (None = all)
    # Batch Bundles (the chart look-up of vocabulary biasing: reads) are seen as "BATCH / <status>" and get the
    # faults only when this is set, so write-failure tests fail writes only.
    batches: bool = False
    hide_transactions: bool = False  # rewrite the CapabilityStatement as a server without transactions
    smart_configuration: dict | None = None  # serve this at .well-known/smart-configuration (the EHR's AS)
    seen: list[str] = field(default_factory=list)  # "METHOD path status" of every request
    arrived: list[float] = field(default_factory=list)  # time.monotonic() each of them arrived
    authorizations: list[str | None] = field(default_factory=list)  # the Authorization header of every request

    def reset(self) -> None:
        self.fail_next, self.status, self.delay_s, self.only_method = 0, 503, 0.0, "POST"
        self.retry_after = None
        self.pass_first = 0
        self.batches = False
        self.hide_transactions = False
        self.seen.clear()
        self.arrived.clear()
        self.authorizations.clear()


class FaultProxy:
    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.faults = Faults()
        self._client = httpx.AsyncClient(timeout=60)
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "PUT", "DELETE"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> "FaultProxy":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _forward(self, request: Request) -> Response:
        faults = self.faults
        arrived = time.monotonic()
        path = request.url.path.removeprefix("/fhir") or "/"
        faults.authorizations.append(request.headers.get("authorization"))
        if path == "/.well-known/smart-configuration" and faults.smart_configuration is not None:
            return Response(json.dumps(faults.smart_configuration), media_type="application/json")
        method = request.method
        if method == "POST" and path == "/" and b'"batch"' in await request.body():
            method = "BATCH"
        applies = faults.only_method in (None, request.method) and (method != "BATCH" or faults.batches)
        if applies and faults.pass_first > 0:
            faults.pass_first -= 1
            applies = False
        if applies and faults.fail_next > 0:
            faults.fail_next -= 1
            faults.seen.append(f"{method} {path} {faults.status}")
            faults.arrived.append(arrived)
            body = ('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient",'
                    '"diagnostics":"injected fault"}]}')
            headers = {"Retry-After": faults.retry_after} if faults.retry_after else {}
            return Response(body, status_code=faults.status, media_type="application/fhir+json", headers=headers)
        if applies and faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        upstream = await self._client.request(
            request.method, self.upstream + path.rstrip("/"), params=request.query_params, content=await request.body(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")})
        faults.seen.append(f"{method} {path} {upstream.status_code}")
        faults.arrived.append(arrived)
        headers = {k: v for k, v in upstream.headers.items()
                   if k.lower() in ("content-type", "location", "etag", "content-location", "last-modified")}
        content = upstream.content
        if faults.hide_transactions and path == "/metadata":
            statement = json.loads(content)
            for rest in statement.get("rest", []):
                rest["interaction"] = [i for i in rest.get("interaction", []) if i.get("code") != "transaction"]
            content = json.dumps(statement).encode()
        return Response(content, status_code=upstream.status_code, headers=headers)
