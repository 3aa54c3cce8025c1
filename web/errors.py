"""Every error becomes one response, in one place: JSON ``{"error": {"code", "message"}}`` under
``/api/``, an HTML page elsewhere. The codes are stable; clients may branch on them."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from search_engine.errors import (
    ConflictError,
    DimensionMismatchError,
    FaceSearchError,
    ImageError,
    IndexUnavailableError,
    InvalidRequestError,
    ModelUnavailableError,
    NoFaceError,
    NotFoundError,
)

log = logging.getLogger(__name__)

#: Domain errors by HTTP status and code; the first entry an error is an instance of wins.
DOMAIN_ERRORS: tuple[tuple[type[FaceSearchError], int, str], ...] = (
    (ImageError, 400, "invalid_image"),
    (InvalidRequestError, 400, "invalid_request"),
    (NoFaceError, 422, "no_face"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (IndexUnavailableError, 503, "index_unavailable"),
    (ModelUnavailableError, 503, "model_unavailable"),
    (DimensionMismatchError, 503, "index_mismatch"),
)

#: Codes of the HTTP errors Flask and the web layer raise; any other status is ``http_error``.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}

#: Every code an error response can carry: the ``Error`` schema's enum in openapi.json, which a
#: test keeps equal to it.
ERROR_CODES = frozenset(
    {code for _, _, code in DOMAIN_ERRORS} | set(HTTP_CODES.values()) | {"unreadable", "http_error", "internal_error"}
)


class WebError(Exception):
    """An error the web layer itself raises (a missing face, a file outside the media roots)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"{code!r} is not one of the error codes (ERROR_CODES)")
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str):
    """The response for one error: JSON for API calls, the error page for everything else."""
    if request.path.startswith("/api/"):
        response = jsonify(error={"code": code, "message": message})
        response.status_code = status
    else:
        response = make_response(render_template("error.html", status=status, code=code, message=message), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="facesearch"'
    return response


def _http_message(exc: HTTPException) -> str:
    if exc.code == 404:
        return f"nothing here: {request.path}"
    if exc.code == 405:
        return f"{request.method} is not allowed on {request.path}"
    return exc.description or exc.name


def register_error_handlers(app: Flask, max_upload_bytes: int) -> None:
    def web_error(exc: WebError):
        return error_response(exc.status, exc.code, exc.message)

    def domain_error(exc: FaceSearchError):
        for kind, status, code in DOMAIN_ERRORS:
            if isinstance(exc, kind):
                if status >= 500:
                    log.error("%s: %s", code, exc.message)
                return error_response(status, code, exc.message)
        return unexpected(exc)

    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:
            message = f"the upload is larger than the limit of {max_upload_bytes / 1e6:g} MB"
        else:
            message = _http_message(exc)
        response = error_response(status, HTTP_CODES.get(status, "http_error"), message)
        # Werkzeug's own headers for the error, such as the Allow a 405 must carry (RFC 9110).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    def unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed on this request; it is logged")

    app.register_error_handler(WebError, web_error)
    app.register_error_handler(FaceSearchError, domain_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected)
