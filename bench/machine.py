"""Describe the machine and the software versions of a benchmark run."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

from bench.processes import nginx_path
from bench.wrk import wrk_path

PACKAGES = ("aiohttp", "aiobotocore", "botocore", "prometheus-client", "moto", "uvloop")


def describe_machine() -> dict[str, object]:
    """Return the CPU model, core count, memory and kernel of this machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    return {
        "cpu_model": model.group(1).strip() if model else "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(int(total.group(1)) / 1024 / 1024, 1) if total else None,
        "kernel": platform.release(),
    }


def tool_versions() -> dict[str, str]:
    """Return the versions of Python, the sidecar, its main libraries, wrk and nginx."""
    versions = {"python": platform.python_version()}
    for package in ("sidecar", *PACKAGES):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["wrk"] = _first_line([wrk_path(), "--version"], r"wrk (\S+)")
    versions["nginx"] = _first_line([nginx_path(), "-v"], r"nginx/(\S+)")
    return versions


def _first_line(command: list[str], pattern: str) -> str:
    # wrk --version exits 1 and nginx -v prints to stderr, so both streams are read
    # and the exit status is ignored.
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    found = re.search(pattern, completed.stdout + completed.stderr)
    return found.group(1) if found else "unknown"
