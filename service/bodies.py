"""Strict request input, checked before any handler runs (the app's ``before_request`` hook).

Litestar reads a JSON body leniently (``"10"`` becomes ``10``, any content type is parsed as JSON),
so every route that takes a body gets these checks first, each failure a 4xx naming what is wrong:

* the body is ``application/json`` in UTF-8 (else 415), so that a form posted from another site
  cannot reach a JSON endpoint;
* it is valid UTF-8 and JSON, nested at most :data:`MAX_DEPTH` deep, and its strings hold no NUL
  character (PostgreSQL text cannot store one);
* it has the handler's declared type in msgspec's strict mode: no string is coerced to a number
  (a float with an integral value counts as an integer, as in JSON Schema). Every integer field
  of a body is bounded (see :mod:`xlgen.service.schemas`), so none reaches storage or the model beyond
  what they take.

Path parameters (ids) are at most :data:`MAX_ID_CHARS` characters without control characters.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException

from xlgen.service.errors import bad_request
from xlgen.service.schemas import MAX_ID_CHARS

MAX_DEPTH = 64
"""Nesting of a JSON body (arrays and objects): far more than any body the service takes needs."""

INT64 = (-(2**63), 2**63 - 1)

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `(?P<name>[^`]*)`")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _key(path: str) -> str:
    """A msgspec error path (``.texts[0]``) as a field key (``texts[0]``); the root is ``body``."""
    return path.lstrip(".") or "body"


def _integral(x: Any) -> Any:
    """``x`` as an int when it is a float with an integral value that fits 64 bits (JSON Schema
    counts ``1.0`` as an integer), else ``x``."""
    if isinstance(x, float) and x.is_integer() and INT64[0] <= x <= INT64[1]:
        return int(x)
    return x


def _scan(value: Any) -> tuple[str, str] | None:
    """The first ``(key, problem)`` of a decoded JSON value: nested too deep, or a NUL character in a
    string or an object key; None when there is none. Integral floats become ints on the way."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= MAX_DEPTH:
                return _key(path), f"nested more than {MAX_DEPTH} deep"
            for k, v in item.items():
                if "\x00" in k:
                    return _key(path), "an object key holds a NUL character"
                item[k] = _integral(v)
                stack.append((item[k], f"{path}.{k}", depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                return _key(path), f"nested more than {MAX_DEPTH} deep"
            for i, v in enumerate(item):
                item[i] = _integral(v)
                stack.append((item[i], f"{path}[{i}]", depth + 1))
        elif isinstance(item, str) and "\x00" in item:
            return _key(path), "holds a NUL character"
    return None


def decode_strict(body: bytes, type_: Any) -> Any:
    """``body`` decoded as JSON and checked against ``type_`` in msgspec's strict mode.

    Returns:
        The decoded value (builtins, as Litestar's own decoding gives them).

    Raises:
        ValidationException: 400 naming the field at fault (``body`` for the body as a whole).
    """
    if not body.strip():
        raise bad_request("body", "empty body: send a JSON object")
    try:
        value = msgspec.json.decode(body)
    except UnicodeDecodeError as e:
        raise bad_request("body", f"not valid UTF-8 (byte {e.start})") from None
    except msgspec.DecodeError as e:
        raise bad_request("body", str(e) if str(e).startswith("JSON is malformed") else f"JSON is malformed: {e}") from None
    except RecursionError:
        raise bad_request("body", f"nested more than {MAX_DEPTH} deep") from None
    if problem := _scan(value):
        raise bad_request(*problem)
    try:
        msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as e:
        m = _AT.match(str(e))
        message, path = (m.group("message"), m.group("path") or "") if m else (str(e), "")
        if ("unknown field" in message or "missing required field" in message) and (field := _FIELD.search(message)):
            path = f"{path}.{field.group('name')}"
        raise bad_request(_key(path), message) from None
    return value


def check_content_type(request: Request) -> None:
    """415 unless the body is declared ``application/json`` (or ``application/*+json``) in UTF-8."""
    media, options = request.content_type
    media = media.lower()
    json_type = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
    charset = options.get("charset", "utf-8").lower()
    if not json_type or charset not in ("utf-8", "utf8"):
        got = media + (f"; charset={charset}" if "charset" in options else "") if media else "no content type"
        message = f"send the body as application/json (UTF-8); got {got}"
        raise ClientException(status_code=415, detail=f"content-type: {message}",
                              extra=[{"key": "content-type", "message": message, "source": "header"}])


def check_path_ids(request: Request) -> None:
    """400 for a path parameter string longer than :data:`MAX_ID_CHARS` or holding control characters."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (len(value) > MAX_ID_CHARS or _CONTROL.search(value)):
            raise bad_request(name, f"at most {MAX_ID_CHARS} characters, no control characters", source="path")


async def strict_input(request: Request) -> None:
    """The ``before_request`` hook: path ids, then for a route that takes a body its content type,
    encoding, shape and strict type."""
    check_path_ids(request)
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    check_content_type(request)
    decode_strict(await request.body(), data.annotation)
