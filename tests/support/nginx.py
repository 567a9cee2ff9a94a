"""A real TLS-terminating reverse proxy for the tests: Debian's nginx in front of one service on 127.0.0.1.

Independent of the rest of the project: only the standard library.

    with Nginx("http://127.0.0.1:9001", certfile, keyfile, work_dir=tmp_path) as proxy:   # start() / stop()
        httpx.get(proxy.url + "/readyz", verify=ssl_context_trusting_the_test_ca)

nginx runs in the foreground (``-g 'daemon off;'``) as a subprocess, with its config, pid file, logs and temporary
directories all inside ``work_dir``. It listens on https://127.0.0.1:<port> (TLS 1.2 and 1.3) and passes requests
to the upstream over plain HTTP with what a production proxy sets: ``Host`` (as the client sent it, port
included), ``X-Forwarded-For`` (the client's address appended), ``X-Forwarded-Proto: https`` and
``X-Forwarded-Host``. Responses are not buffered (SSE transcription streams arrive as they are produced), request
bodies are streamed to the upstream as they arrive and may be as large as the service's own upload limit, and the
timeouts are long enough for a transcription. One access-log line per request goes to ``work_dir/access.log``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.daemons import stop, wait_listening

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NginxError(RuntimeError):
    """nginx could not be configured or started."""


class Nginx:
    def __init__(self, upstream: str, certfile: Path | str, keyfile: Path | str, work_dir: Path, *,
                 port: int | None = None, max_body: str = "200m", timeout_s: int = 300,
                 forwarded_for: str = "$proxy_add_x_forwarded_for") -> None:
        """`upstream`: the service's http://host:port. `forwarded_for`: the X-Forwarded-For value nginx sends
        (an nginx expression; the default appends the client's address to what it sent)."""
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise NginxError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = f"{parts.hostname}:{parts.port or 80}"
        self.certfile, self.keyfile = Path(certfile).resolve(), Path(keyfile).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.port = port or _free_port()
        self.max_body = max_body
        self.timeout_s = timeout_s
        self.forwarded_for = forwarded_for
        self.config_path = self.work_dir / "nginx.conf"
        self.error_log_path = self.work_dir / "error.log"
        self.access_log_path = self.work_dir / "access.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def config(self) -> str:
        w = self.work_dir
        # As root the master drops its workers to `nobody`, which could not write the temporary directories
        # inside a private temp dir (request bodies larger than the buffer are spooled there): stay root.
        user = "user root;" if os.geteuid() == 0 else ""
        return f"""\
{user}
worker_processes 1;
pid {w / "nginx.pid"};
error_log {self.error_log_path} info;

events {{
    worker_connections 256;
}}

http {{
    access_log {self.access_log_path} combined;
    client_body_temp_path {w / "client_body"};
    proxy_temp_path {w / "proxy"};
    fastcgi_temp_path {w / "fastcgi"};
    uwsgi_temp_path {w / "uwsgi"};
    scgi_temp_path {w / "scgi"};

    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name 127.0.0.1 localhost;
        ssl_certificate {self.certfile};
        ssl_certificate_key {self.keyfile};
        ssl_protocols TLSv1.2 TLSv1.3;

        client_max_body_size {self.max_body};

        location / {{
            proxy_pass http://{self.upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For {self.forwarded_for};
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout {self.timeout_s}s;
            proxy_send_timeout {self.timeout_s}s;
        }}
    }}
}}
"""

    def _command(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.work_dir), "-c", str(self.config_path), "-e", str(self.error_log_path),
                *extra]

    def start(self, timeout_s: float = 15) -> "Nginx":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.work_dir / temp).mkdir(exist_ok=True)
        self.config_path.write_text(self.config())
        check = subprocess.run(self._command("-t", "-q"), capture_output=True, text=True)
        if check.returncode != 0:
            raise NginxError(f"nginx -t refused the config:\n{check.stdout}{check.stderr}\n{self.config()}")
        self.process = subprocess.Popen(self._command("-g", "daemon off;"), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.process, self.port, timeout_s, "nginx", self.error_log, NginxError)
        return self

    def stop(self) -> None:
        stop(self.process)

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def error_log(self) -> str:
        return self.error_log_path.read_text(errors="replace") if self.error_log_path.exists() else ""

    def access_log(self) -> list[str]:
        return (self.access_log_path.read_text(errors="replace").splitlines()
                if self.access_log_path.exists() else [])
