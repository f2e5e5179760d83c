"""Start and stop the processes a benchmark measures, all on loopback.

Every process here is started by the harness, listens on a free 127.0.0.1 port,
and is stopped with SIGTERM (then SIGKILL) when its scenario ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import HttpReply, SidecarProcess, http_request
from tools.emulator import LOOPBACK, free_port, wait_for_port

STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# wrk opens up to this many connections, and nginx needs one descriptor per
# connection plus its own files.
NGINX_CONNECTIONS = 4096


def rss_kib(pid: int) -> int:
    """Return the resident set size of process ``pid`` in KiB (VmRSS in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    msg = f"no VmRSS line for process {pid}"
    raise RuntimeError(msg)


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user and system) of process ``pid`` and its live children.

    nginx serves from a worker process under its master, so the children count;
    the Python servers have none.
    """
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    total = 0
    for candidate in [pid, *_children(pid)]:
        fields = _stat_fields(candidate)
        if fields is not None:
            # utime and stime are fields 14 and 15 of /proc/PID/stat (proc(5)).
            total += int(fields[11]) + int(fields[12])
    return total / ticks_per_second


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in brackets may contain spaces, so split after it; the
    # first field after it is field 3 (state).
    return text.rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            # Field 4, the parent process id.
            if fields is not None and int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM, wait, and kill the process if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class ServerProcess:
    """A server process that the harness started, with its port and log."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this server."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    def stop(self) -> None:
        """Stop the server."""
        stop_process(self.process)


def _spawn(name: str, command: list[str], port: int, log_path: Path) -> ServerProcess:
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    server = ServerProcess(name=name, process=process, port=port, log_path=log_path)
    try:
        wait_for_port(port, STARTUP_TIMEOUT_S)
    except TimeoutError:
        server.stop()
        msg = f"{name} did not listen on port {port}; its log:\n{log_path.read_text()}"
        raise RuntimeError(msg) from None
    return server


def start_bare_server(
    workdir: Path, body: bytes, etag: str, loop: str = "asyncio"
) -> ServerProcess:
    """Start the bare aiohttp baseline that returns ``body``."""
    body_file = workdir / "bare-body.json"
    body_file.write_bytes(body)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.bare_server",
        f"--port={port}",
        f"--body-file={body_file}",
        f"--etag={etag}",
        f"--loop={loop}",
    ]
    return _spawn(f"bare aiohttp ({loop})", command, port, workdir / f"bare-{loop}.log")


def nginx_path() -> str:
    """Return the nginx executable or raise FileNotFoundError with the fix."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        msg = "nginx not found; install it with `make bench-deps` (Debian package nginx-light)"
        raise FileNotFoundError(msg)
    return found


def start_nginx(workdir: Path, body: bytes) -> ServerProcess:
    """Start nginx in the foreground, serving ``body`` as a static file at /v1/keys.

    nginx runs one worker process, like the single-process Python servers it is
    compared with, and gets its own prefix, config, pid file and logs in
    ``workdir``, so it touches nothing of a system installation.
    """
    prefix = workdir / "nginx"
    root = prefix / "root"
    (root / "v1").mkdir(parents=True, exist_ok=True)
    (root / "v1" / "keys").write_bytes(body)
    # nginx started as root serves files as the unprivileged user "nobody".
    for path in (workdir, prefix, root, root / "v1"):
        path.chmod(0o755)
    (root / "v1" / "keys").chmod(0o644)
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(
        f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {NGINX_CONNECTIONS}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {LOOPBACK}:{port};
        root {root};
        location / {{
            default_type application/json;
            add_header Cache-Control no-store;
        }}
    }}
}}
"""
    )
    command = [nginx_path(), "-p", str(prefix), "-c", str(config), "-e", f"{prefix}/error.log"]
    return _spawn("nginx", command, port, workdir / "nginx.log")


def start_counting_proxy(workdir: Path, upstream: str) -> ServerProcess:
    """Start the counting pass-through proxy in front of ``upstream``."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.counting_proxy",
        f"--port={port}",
        f"--upstream={upstream}",
    ]
    return _spawn("counting proxy", command, port, workdir / "proxy.log")


@dataclass
class BenchSidecar(SidecarProcess):
    """A sidecar process as the tests start it, plus what the benchmarks read.

    ``module`` is the module run with ``python -m``, so the harness can start
    the sidecar on uvloop through a wrapper without changing the sidecar.
    """

    module: str = "sidecar"
    started_at: float = field(default=0.0, init=False)

    def start(self) -> BenchSidecar:
        """Start the process and wait until the keys listener accepts connections."""
        with self.log_path.open("wb") as log_file:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            wait_for_port(self.port, STARTUP_TIMEOUT_S)
        except TimeoutError:
            self.stop()
            msg = f"sidecar did not listen; its log:\n{self.log_text()}"
            raise RuntimeError(msg) from None
        return self

    @property
    def pid(self) -> int:
        """Return the process id."""
        assert self.process is not None  # noqa: S101 - start() sets it
        return self.process.pid

    def rss_kib(self) -> int:
        """Return the resident set size in KiB."""
        return rss_kib(self.pid)

    def metric_values(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Read every sample from the metrics listener, keyed by name and labels."""
        with urllib.request.urlopen(self.metrics_url(), timeout=5) as reply:  # noqa: S310 - loopback
            text = reply.read().decode()
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    def metric_sum(self, name: str, **labels: str) -> float:
        """Add up the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in self.metric_values().items()
            if sample == name and wanted <= set(sample_labels)
        )

    def post(self, path: str, body: bytes, timeout: float = 10.0) -> HttpReply:
        """POST ``body`` to ``path`` with the token and return the reply."""
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["X-Sidecar-Token"] = self.token
        url = self.url(path)
        return http_request(url, method="POST", headers=headers, body=body, timeout=timeout)
