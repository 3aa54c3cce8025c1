"""The Flask search page and JSON API; builds on ``search_engine`` only.

``create_app`` builds everything; nothing happens at import. ``facesearch serve`` runs it under
gunicorn (see :mod:`web.server`).
"""

from __future__ import annotations

from flask import Flask

from search_engine.config import Settings
from search_engine.errors import ConfigError
from search_engine.service import SearchService

from . import api, pages
from .auth import init_auth
from .engine import Engine
from .errors import register_error_handlers

#: Sent with every response. Scripts and styles come only from this app (none inline), query
#: previews are blob: URLs, and no other site may frame the pages.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def create_app(settings: Settings | None = None, service: SearchService | None = None) -> Flask:
    """The web app.

    Args:
        settings: None reads ``FACESEARCH_*`` from the environment.
        service: a built search service to use (tests share one); None builds one on first need,
            once per process (``Engine.load`` builds it at once).
    """
    settings = settings or Settings.from_env()
    if settings.web.results_per_page > api.MAX_RESULTS:
        raise ConfigError(
            f"FACESEARCH_RESULTS_PER_PAGE must be at most {api.MAX_RESULTS}, got {settings.web.results_per_page}"
        )
    app = Flask(__name__)
    # Werkzeug refuses a larger body with 413 before reading it.
    app.config["MAX_CONTENT_LENGTH"] = settings.web.max_upload_bytes
    app.extensions["facesearch"] = Engine(settings, service)
    register_error_handlers(app, settings.web.max_upload_bytes)
    init_auth(app, settings.web.api_keys)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.jinja_env.filters["clock"] = clock

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def clock(seconds: float | None) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` from an hour), as video players show them."""
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
