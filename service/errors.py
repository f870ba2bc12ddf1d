"""Error responses: one JSON body for every 4xx and 5xx, ``{status_code, detail[, extra]}``, the
exception handlers that write it, and its place in the OpenAPI document.

``extra`` lists the fields at fault, each ``{key, message[, source]}``: ``key`` is the body field
(``texts[0]``, ``documents[2].id``), the parameter or the header, or ``body`` for the body as a whole.
Every route documents the errors it can answer: the ones every route of its kind shares are added
by :func:`document_errors` (400 for input, 401 behind the key, 413 and 415 for a body); a route
adds its own (404, 409, 503, 504) with ``responses=errors(...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from xlgen.service.auth import GUARDS, require_annotator, require_reader, require_tagger

log = logging.getLogger("xlgen.service")


class ErrorItem(msgspec.Struct, omit_defaults=True):
    """One field at fault."""

    key: str
    message: str
    source: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The body of every error response."""

    status_code: int
    detail: str
    extra: list[ErrorItem] | None = None


DESCRIPTIONS = {
    400: "Invalid input: `extra` names each field, parameter or header at fault",
    401: "Missing or wrong credentials: the API key (X-API-Key header, a bearer token, or the password of basic auth), the read "
         "key where it reads, an annotator's token where annotators may act (and tagging while XLGEN_OPEN_TAGGING is off)",
    403: "Not for these credentials: an annotator's token acting as another annotator, setting what only the API key sets, "
         "or reading what only the keys read; or an event of a Label Studio project not in XLGEN_LABELSTUDIO_PROJECTS",
    404: "No such resource",
    408: "The request's head or body did not arrive within XLGEN_HEADER_TIMEOUT_S or XLGEN_BODY_TIMEOUT_S",
    409: "Conflicts with the state of the service: a document claimed or annotated by another annotator, a text that "
         "differs from the stored document's, a job that runs",
    413: "Request body larger than XLGEN_MAX_BODY_BYTES",
    415: "Request body not sent as application/json (UTF-8)",
    502: "The chat endpoint asked for a second opinion failed or answered something that does not parse",
    503: "The model is loading or failed to load, or the tagging queue is full (see Retry-After)",
    504: "No answer within XLGEN_REQUEST_TIMEOUT_S; the request's remaining work is dropped",
}


def bad_request(key: str, message: str, source: str = "body") -> ValidationException:
    """A 400 whose ``extra`` names the offending field."""
    return ValidationException(detail=f"{key}: {message}", extra=[{"key": key, "message": message, "source": source}])


def conflict(key: str, message: str) -> ClientException:
    """A 409 whose ``extra`` names the field whose value conflicts with the stored state."""
    return ClientException(status_code=409, detail=f"{key}: {message}", extra=[{"key": key, "message": message}])


def errors(*codes: int, **descriptions: str) -> dict[int, ResponseSpec]:
    """OpenAPI responses for ``codes`` with the error body; ``descriptions`` (``e409="..."``)
    replace the generic description of a code."""
    return {code: ResponseSpec(data_container=ErrorBody, generate_examples=False,
                               description=descriptions.get(f"e{code}", DESCRIPTIONS[code])) for code in codes}


def document_errors(handlers: Iterable[HTTPRouteHandler]) -> None:
    """Adds the errors every route of its kind can answer to each handler's documented responses:
    400 when it reads a body or parameters, 401 behind the API key or an annotator's token (403 when a token
    names another annotator), 413 and 415 for a body. A code
    the handler documents itself keeps its own description."""
    for handler in handlers:
        params = {k: v for k, v in handler.parsed_fn_signature.parameters.items()
                  if k not in ("rt", "request", "scope", "state") and k not in (handler.dependencies or {})}
        codes = []
        if params:
            codes.append(400)
        guards = set(handler.guards or [])
        if guards & {*GUARDS, require_tagger}:
            codes.append(401)
        if guards & {require_annotator, require_reader}:
            codes.append(403)
        if "data" in params:
            codes += [413, 415]
        handler.responses = {**errors(*codes), **(handler.responses or {})}


def _items(extra: Any) -> list[dict[str, Any]] | None:
    """``extra`` of an exception as a list of ``{key, message[, source]}``."""
    if isinstance(extra, dict):
        extra = [{"key": str(k), "message": str(v)} for k, v in extra.items()]
    if not isinstance(extra, list) or not extra:
        return None
    out = []
    for item in extra:
        if isinstance(item, dict):
            entry = {"key": str(item.get("key") or "body"), "message": str(item.get("message", ""))}
            if item.get("source") is not None:
                entry["source"] = str(getattr(item["source"], "value", item["source"]))  # Litestar's ParamType enum
            out.append(entry)
        else:
            out.append({"key": "body", "message": str(item)})
    return out


def http_error(request: Request, exc: HTTPException) -> Response:
    """Every client or server error as ``{status_code, detail[, extra]}`` JSON."""
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.status_code == 413:
        body["detail"] = f"request body too large: at most {request.app.state.runtime.settings.max_body_bytes} bytes"
        body["extra"] = [{"key": "body", "message": body["detail"]}]
    elif extra := _items(exc.extra):
        body["extra"] = extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
    return Response({"status_code": 500, "detail": "internal server error"}, status_code=HTTP_500_INTERNAL_SERVER_ERROR)
