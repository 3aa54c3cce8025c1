"""A throwaway ``facesearch serve`` on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str, headers: Mapping[str, str]) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers)), timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_server(
    args: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 300,
) -> Iterator[str]:
    """Start ``facesearch serve ARGS`` with ``env`` as its only FACESEARCH_* settings, output to
    ``log``; yield its base URL once ``/api/v1/health`` answers 200 (models loaded, index open);
    stop it afterwards (SIGTERM, then SIGKILL to its process group if it hangs).

    Args:
        headers: sent with the health check (an ``X-API-Key`` when keys are configured).
    """
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACESEARCH_")} | dict(env)
    command = [sys.executable, "-m", "facesearch", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "a") as out:
        process = subprocess.Popen(command, env=clean, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(f"{base}/api/v1/health", headers or {}):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"facesearch serve did not become healthy; see {log}")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
