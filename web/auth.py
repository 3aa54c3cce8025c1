"""Optional API keys (``FACESEARCH_API_KEYS``): when any is set, every page, file and API call needs one.

A key is taken from, in this order: the ``X-API-Key`` header, ``Authorization: Bearer KEY``, the
``key`` query parameter, or the ``facesearch_key`` cookie. Browsers can't add headers to ``<img>``
and ``<video>`` requests, so a page opened once as ``/?key=KEY`` stores the key in an HttpOnly,
SameSite=Lax cookie and is redirected to the same address without it (keeping the key out of the
history and of Referer headers); every later page, file and API call from that browser carries the
cookie. Static files (CSS, JS) need no key: they hold nothing private.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from urllib.parse import urlencode

from flask import Flask, redirect, request

from .errors import WebError

COOKIE = "facesearch_key"
QUERY_PARAM = "key"


def presented_key() -> str | None:
    """The key this request carries, wherever it is, or None."""
    header = request.headers.get("X-API-Key")
    if header:
        return header.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.args.get(QUERY_PARAM) or request.cookies.get(COOKIE)


def key_matches(key: str, keys: Sequence[str]) -> bool:
    """Whether ``key`` is one of ``keys``, compared in constant time against every one of them."""
    given = key.encode()
    matched = False
    for candidate in keys:
        matched |= hmac.compare_digest(given, candidate.encode())
    return matched


def init_auth(app: Flask, keys: Sequence[str]) -> None:
    """Require one of ``keys`` on every request but static files; no keys, no check."""
    if not keys:
        return

    def require_key():
        if request.endpoint == "static":
            return None
        key = presented_key()
        if key is None or not key_matches(key, keys):
            reason = "an API key is required" if key is None else "that API key is not valid"
            raise WebError(401, "unauthorized", f"{reason}: send it as X-API-Key or Authorization: Bearer")
        if QUERY_PARAM in request.args and request.blueprint == "pages" and request.method == "GET":
            return _remember(key)
        return None

    app.before_request(require_key)


def _remember(key: str):
    """Redirect to the same page without the key, setting the key cookie."""
    rest = [(name, value) for name, value in request.args.items(multi=True) if name != QUERY_PARAM]
    response = redirect(request.path + (f"?{urlencode(rest)}" if rest else ""))
    response.set_cookie(COOKIE, key, httponly=True, samesite="Lax", secure=request.is_secure)
    return response
