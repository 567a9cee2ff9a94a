"""A real load balancer for the tests: Debian's HAProxy in front of service replicas on 127.0.0.1.

Independent of the rest of the project: only the standard library.

    with Haproxy([("r0", 9001), ("r1", 9002)], work_dir=tmp_path) as lb:   # start() on enter, stop() on exit
        httpx.get(lb.url + "/healthz")
        lb.wait_for(up={"r0", "r1"})                                      # both in rotation (health checks pass)
        lb.states()                                                       # {"r0": "UP", "r1": "DOWN", ...}

HAProxy runs in the foreground (-db) as a subprocess with its config in ``work_dir``; its request log (one line per
request: backend server, status, timings) goes to ``work_dir/haproxy.log``; every answer says which server gave
it (``X-Served-By``). Health checks are GET /readyz every
``inter_ms`` and must answer 200: a draining replica (503 "draining") or a dead one leaves rotation after one failed
check, and comes back after ``rise`` passing ones. A connection refused is retried on another server (retries +
redispatch: nothing of the request reached a replica); any answer a replica gave (503 + Retry-After included) is
passed to the client as it is. The server timeout is long enough for a transcription.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.daemons import stop, wait_listening

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HaproxyError(RuntimeError):
    """HAProxy could not be configured or started."""


class Haproxy:
    def __init__(self, servers: list[tuple[str, int]], work_dir: Path, *, port: int | None = None,
                 balance: str = "roundrobin", inter_ms: int = 500, fall: int = 1, rise: int = 2,
                 server_timeout_s: int = 120, health_path: str = "/readyz") -> None:
        self.servers = list(servers)
        self.work_dir = Path(work_dir)
        self.port = port or _free_port()
        self.balance = balance
        self.inter_ms, self.fall, self.rise = inter_ms, fall, rise
        self.server_timeout_s = server_timeout_s
        self.health_path = health_path
        self.config_path = self.work_dir / "haproxy.cfg"
        self.log_path = self.work_dir / "haproxy.log"
        self.socket_path = self.work_dir / "haproxy.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in self.servers)
        return f"""\
global
    log stdout format raw local0 info
    maxconn 2000
    stats socket {self.socket_path} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client {self.server_timeout_s + 10}s
    timeout server {self.server_timeout_s}s
    timeout queue 30s
    timeout http-request 30s
    # A refused connection (the replica is gone or restarting) is tried again, on another server: nothing of the
    # request reached a replica, so this is safe for a POST.
    retries 3
    option redispatch 1

frontend scribe_in
    bind 127.0.0.1:{self.port}
    default_backend scribe

backend scribe
    balance {self.balance}
    option httpchk GET {self.health_path}
    http-check expect status 200
    http-response set-header X-Served-By %s
    default-server inter {self.inter_ms}ms fastinter {self.inter_ms}ms downinter {self.inter_ms}ms \
fall {self.fall} rise {self.rise}
{servers}
"""

    def start(self, timeout_s: float = 15) -> "Haproxy":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise HaproxyError(f"haproxy -c refused the config:\n{check.stdout}{check.stderr}\n{self.config()}")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([HAPROXY, "-f", str(self.config_path), "-db"], stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        wait_listening(self.process, self.port, timeout_s, "haproxy", self.log, HaproxyError)
        return self

    def stop(self) -> None:
        stop(self.process)

    def __enter__(self) -> "Haproxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self, line: str) -> str:
        """One command on the admin socket (e.g. "show stat", "disable server scribe/r0")."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def states(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it: UP, DOWN, "UP 1/2" (rising), MAINT..."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "scribe" and row.get("svname") not in ("FRONTEND", "BACKEND", None):
                found[row["svname"]] = row.get("status", "")
        return found

    def wait_for(self, up: set[str] | None = None, down: set[str] | None = None, timeout_s: float = 30) -> None:
        """Until the named servers are UP (in rotation) / DOWN (out of it) as HAProxy sees them."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.states()
            if all(states.get(s) == "UP" for s in up or ()) and all(
                    states.get(s, "").startswith("DOWN") for s in down or ()):
                return
            if time.monotonic() > deadline:
                raise HaproxyError(f"servers not in the expected state within {timeout_s:g} s: {states}")
            time.sleep(0.1)

    def requests_log(self) -> list[dict[str, str]]:
        """Parsed request log lines: server, status, total time (ms), termination state, method and path."""
        rows = []
        for line in self.log().splitlines():
            # HTTP log format: client [date] frontend backend/server TR/Tw/Tc/Tr/Ta status bytes - - TERM conns queue
            #                  {headers} "METHOD path HTTP/1.1"
            parts = line.split()
            if len(parts) < 12 or "/" not in parts[3] or parts[4].count("/") != 4:
                continue
            request = line.split('"')[1] if line.count('"') >= 2 else ""
            rows.append({"server": parts[3].split("/", 1)[1], "timers": parts[4], "status": parts[5],
                         "termination": parts[9], "request": request})
        return rows
