"""``facesearch serve``: the app under gunicorn, models loaded in each worker after the fork."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from search_engine.config import Settings

log = logging.getLogger(__name__)

#: Seconds a worker may stay silent before gunicorn replaces it. gthread workers report between
#: requests, so this bounds model loading at boot rather than a search.
WORKER_TIMEOUT = 120


class _Server(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self):
        # Called in each worker after the fork (preload_app stays off): torch, dlib and the index
        # handles are made in the process that uses them, and the first search finds them ready.
        from . import create_app

        app = create_app(self._settings)
        app.extensions["facesearch"].load()
        return app


def serve(settings: Settings, host: str, port: int, workers: int, threads: int) -> None:
    """Serve until SIGINT or SIGTERM (finishing requests in hand): ``workers`` processes, each with
    ``threads`` request threads and its own models; ``settings.models.torch_threads`` applies per worker."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    log.info("serving on %s with %d worker(s) x %d thread(s)", bind, workers, threads)
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": WORKER_TIMEOUT,
        "proc_name": "facesearch-web",
        # Its default path is one per user, so a second server (tests, a benchmark) would take it over.
        "control_socket_disable": True,
    }
    _Server(settings, options).run()
