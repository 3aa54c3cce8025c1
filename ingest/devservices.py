"""Throwaway local services for tests and benchmarks: a ``redis-server`` and ``facesearch worker``
processes on 127.0.0.1. Not for production (use a managed Redis and a process supervisor)."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from search_engine.config import Settings

from .celery_app import create_celery


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path, timeout_s: float = 20) -> Iterator[str]:
    """A fresh, non-persistent ``redis-server`` on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        # Celery results made in this process unsubscribe from Redis when collected, and short-lived
        # clients never close their sockets (a CLI process just exits): collect them while Redis
        # is still up, quietly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        process.terminate()
        process.wait(timeout=10)


def start_worker(env: Mapping[str, str], log: Path, concurrency: int, timeout_s: float = 120) -> subprocess.Popen:
    """``facesearch worker`` in its own process group with ``env`` as its FACESEARCH_* settings,
    returned once it answers a ping. Its output goes to ``log``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACESEARCH_")} | dict(env)
    with open(log, "a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "facesearch", "worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = create_celery(Settings.from_env(env))
    deadline = time.monotonic() + timeout_s
    while not app.control.ping(timeout=1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the worker did not start; see {log}")
    app.close()
    return process


def stop_worker(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Warm shutdown (SIGTERM: finish the tasks in hand), SIGKILL to the group if that hangs."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
