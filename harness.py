"""Throwaway local services for the tests and the benchmarks, never shipped (not in the wheel):
a ``redis-server``, ``facesearch worker`` processes and a ``facesearch serve`` on 127.0.0.1, each
started with only the FACESEARCH_* settings given and stopped with everything it started.

Benchmarks run as scripts put the repository root on ``sys.path`` to import it; pytest does so
itself. Not for production (use a managed Redis and a process supervisor).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

# At import, not when a worker starts: imported later, Celery's modules are torn down before the
# test session's last results at interpreter exit, which then fail to unsubscribe and say so.
from ingest.celery_app import create_celery
from search_engine.config import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def facesearch_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``env`` as its only FACESEARCH_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FACESEARCH_")} | dict(env)


def status_kib(pid: int, field: str) -> int:
    """A process's ``/proc/PID/status`` memory figure (``VmRSS``, ``VmHWM`` ...) in KiB; 0 when
    the process is gone (Linux)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(f"{field}:")), 0)


def start_facesearch(args: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """``facesearch ARGS`` in its own process group, with ``env`` as its only FACESEARCH_* settings
    and its output appended to ``log``."""
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "facesearch", *args],
            env=facesearch_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, timeout_s: float, failure: str) -> None:
    """Poll ``ready`` until it holds; raise ``RuntimeError(failure)`` if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.2)


def stop(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (a worker finishes the tasks in hand, a server its requests), then SIGKILL to the
    whole process group if that hangs."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A ``redis-server`` on one loopback port and folder that can be stopped and started again,
    as an operator restarts a broker. With ``persistent`` it keeps an append-only file, as the
    docker stack's Redis does, so what was queued survives a restart."""

    def __init__(self, workdir: Path, persistent: bool = False, timeout_s: float = 20) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.workdir, self.persistent, self.timeout_s = workdir, persistent, timeout_s
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes"] if self.persistent else ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *persistence, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )
        wait_until(
            lambda: _answers_ping(self.port), self.process, self.timeout_s, f"redis-server did not start on {self.port}"
        )

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def running_redis(workdir: Path, persistent: bool = False, timeout_s: float = 20) -> Iterator[RedisProcess]:
    """A started :class:`RedisProcess`, stopped after."""
    redis = RedisProcess(workdir, persistent, timeout_s)
    redis.start()
    try:
        yield redis
    finally:
        # Celery results made in this process unsubscribe from Redis when collected, and short-lived
        # clients never close their sockets (a CLI process just exits): collect them while Redis
        # is still up, quietly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        redis.stop()


@contextmanager
def redis_server(workdir: Path, timeout_s: float = 20) -> Iterator[str]:
    """A fresh, non-persistent ``redis-server`` on a free loopback port; yields its URL."""
    with running_redis(workdir, timeout_s=timeout_s) as redis:
        yield redis.url


def start_worker(env: Mapping[str, str], log: Path, concurrency: int, timeout_s: float = 120) -> subprocess.Popen:
    """``facesearch worker`` with ``env`` as its FACESEARCH_* settings, returned once it answers a
    ping. Its output goes to ``log``; stop it with :func:`stop`."""
    process = start_facesearch(["worker", "--concurrency", str(concurrency), "--loglevel", "INFO"], env, log)
    app = create_celery(Settings.from_env(env))
    try:
        wait_until(
            lambda: bool(app.control.ping(timeout=1)), process, timeout_s, f"the worker did not start; see {log}"
        )
    except RuntimeError:
        process.kill()
        raise
    finally:
        app.close()
    return process


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
    """``facesearch serve ARGS`` on a free loopback port with ``env`` as its only FACESEARCH_*
    settings, output to ``log``; yields its base URL once ``/api/v1/health`` answers 200 (models
    loaded, index open), and stops it afterwards.

    Args:
        headers: sent with the health check (an ``X-API-Key`` when keys are configured).
    """
    port = free_port()
    process = start_facesearch(["serve", "--host", "127.0.0.1", "--port", str(port), *args], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _healthy(f"{base}/api/v1/health", headers or {}),
            process,
            timeout_s,
            f"facesearch serve did not become healthy; see {log}",
        )
        yield base
    finally:
        stop(process)


#: What the API contract runs hold the API to beyond schemathesis' defaults, with a key (or with
#: no keys configured) and without one where keys are configured.
SCHEMATHESIS_CONFIG = Path(__file__).resolve().parent / "tests" / "schemathesis.toml"
SCHEMATHESIS_CONFIG_WITHOUT_KEY = SCHEMATHESIS_CONFIG.with_name("schemathesis-without-key.toml")


def api_contract_run(
    base: str,
    report_dir: Path,
    examples: int,
    headers: Mapping[str, str] | None = None,
    schema: Path | None = None,
    config: Path = SCHEMATHESIS_CONFIG,
    seed: int = 1,
    timeout_s: float = 3600,
) -> dict:
    """schemathesis (its CLI, every check, every phase) against the server at ``base``, as a black
    box reading its ``/api/v1/openapi.json`` (or the ``schema`` file, for a server that asks a key
    for it too) and held to ``config``: at most ``examples`` generated cases per operation,
    ``headers`` on every request.
    Returns schemathesis' JSON report, plus ``failure_texts``: each failure as its JUnit report
    describes it (what was sent, what came back, how to replay it)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_report, junit_report = report_dir / "report.json", report_dir / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        *([str(schema), "--url", f"{base}/api/v1"] if schema else [f"{base}/api/v1/openapi.json"]),
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--report",
        "json,junit",
        "--report-json-path",
        str(json_report),
        "--report-junit-path",
        str(junit_report),
    ]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    # In the report's folder, so that schemathesis' cache of crashes stays out of the repository.
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=report_dir)
    if not json_report.is_file():
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(json_report.read_text())
    report["failure_texts"] = [
        f"{case.get('name')}: {(failure.get('message') or '')} {failure.text or ''}".strip()
        for case in ElementTree.parse(junit_report).iter("testcase")
        for failure in [*case.iter("failure"), *case.iter("error")]
    ]
    return report


#: Where :func:`killed_index_run` kills ``facesearch index``: once a write has taken the embedded
#: store's lock (merging faces or file records), or once a compaction has begun.
KILL_POINTS = {"write": "_writing", "compaction": "optimize"}

_KILLING_CHILD = """
import os, signal, sys, threading
from search_engine.index.embedded import EmbeddedFaceIndex
method, nth, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
original, calls = getattr(EmbeddedFaceIndex, method), [0]
def counted(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return original(self, *args, **kwargs)
setattr(EmbeddedFaceIndex, method, counted)
from facesearch.cli import main
sys.exit(main(sys.argv[4:]))
"""


def killed_index_run(
    args: Sequence[str], env: Mapping[str, str], log: Path, point: str, nth: int, delay_s: float
) -> int:
    """``facesearch ARGS`` (an ``index`` run on the embedded store) SIGKILLed from inside
    ``delay_s`` seconds after its ``nth`` write or compaction began (``point``, see
    :data:`KILL_POINTS`), as the OOM killer or a power cut would stop it: no handler runs. Returns
    the exit status: -9 when the kill came, else the run's own (it ended first)."""
    with open(log, "a") as out:
        done = subprocess.run(
            [sys.executable, "-c", _KILLING_CHILD, KILL_POINTS[point], str(nth), str(delay_s), *args],
            env=facesearch_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return done.returncode


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of the live processes whose environment has ``name=value`` (Linux /proc): how a test
    finds what a killed run left behind, its pool's workers among them."""
    wanted, found = f"{name}={value}".encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
