"""Who may do what: the API key, a read key, per-annotator tokens, and nobody.

* The **API key** (``XLGEN_API_KEY``) does everything: writes, reads of annotation data, annotators and
  jobs, server paths and the trainer's command line. When none is configured the service makes one and
  keeps it in ``<work dir>/api_key`` (readable by its owner only), so that no deployment is open by default.
* The **read key** (``XLGEN_READ_KEY``, optional) reads what the API key reads (the annotation export,
  progress, jobs, labels added by name, second opinions), without server paths or command lines, and
  writes nothing.
* An **annotator's token** (``POST /v1/annotators``, only its SHA-256 stored) acts as its annotator: it
  claims, annotates pool documents it may take, releases its own claims, adds labels by name and answers
  questions; it reads what the annotation page shows (progress, labels, the label space). An ``annotator``
  field naming someone else is refused (403).
* **Nobody** (no credentials): the health checks, the metrics, the pages, the served model's description
  without its path, and tagging (``/v1/tag``, Label Studio's ``/predict``) while ``XLGEN_OPEN_TAGGING`` is on.

Every key is compared in constant time. A credential is sent in the ``X-API-Key`` header, as a bearer token,
or as the password of HTTP basic auth (how Label Studio authenticates to an ML backend).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

log = logging.getLogger("xlgen.service")

HEADER = "X-API-Key"
SCOPE_KEY = "xlgen_annotator"
"""Where the guard leaves the token's annotator in the request scope (absent for the keys)."""
KEY_FILE = "api_key"
"""The file in the work directory that keeps the API key the service made."""


def load_or_make_key(path: Path) -> str:
    """The API key kept in ``path``, made (random, 256 bits) and written there first when absent.

    The file is created with mode 0600 under a temporary name and linked into place, so that several
    workers starting at once agree on one key and none reads a half-written file.
    """
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(tmp, path)  # fails if another worker linked its key first: that one is kept
        log.warning("no API key configured: made one", extra={"fields": {"key_file": str(path)}})
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path.read_text().strip()


def presented_key(connection: ASGIConnection) -> str:
    """The key a request presents: the ``X-API-Key`` header, a bearer token, or the password of
    HTTP basic auth (how Label Studio authenticates to an ML backend)."""
    if key := connection.headers.get(HEADER):
        return key
    scheme, _, value = connection.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def _matches(presented: str, expected: str) -> bool:
    """``presented == expected`` in constant time; never for an empty ``expected``."""
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def has_api_key(connection: ASGIConnection) -> bool:
    """Whether the request presents the API key."""
    return _matches(presented_key(connection), connection.app.state.runtime.api_key)


def has_read_key(connection: ASGIConnection) -> bool:
    """Whether the request presents the read key (never when none is configured)."""
    return _matches(presented_key(connection), connection.app.state.runtime.settings.read_key)


async def token_annotator(connection: ASGIConnection) -> str | None:
    """The annotator whose token the request presents, left in the request scope for :func:`acting_annotator`;
    None when it presents none that is known."""
    name = await asyncio.to_thread(connection.app.state.runtime.storage.annotator_of_token, presented_key(connection))
    if name is not None:
        connection.scope[SCOPE_KEY] = name  # type: ignore[literal-required]
    return name


def _refused(what: str) -> NotAuthorizedException:
    return NotAuthorizedException(f"missing or wrong credentials: {what} (send it in the {HEADER} header)")


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through with the API key; else 401."""
    if not has_api_key(connection):
        raise _refused("this needs the API key")


async def require_annotator(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through with the API key, or with an annotator's token (then it acts as that
    annotator); else 401."""
    if not has_api_key(connection) and await token_annotator(connection) is None:
        raise _refused("this needs the API key or an annotator's token")


async def require_reader(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through with the API key or the read key; 403 for an annotator's token, else 401."""
    if has_api_key(connection) or has_read_key(connection):
        return
    if await token_annotator(connection) is not None:
        raise PermissionDeniedException("an annotator's token does not read this: it needs the API key or the read key")
    raise _refused("this needs the API key or the read key")


async def require_member(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through with the API key, the read key or an annotator's token; else 401."""
    if not (has_api_key(connection) or has_read_key(connection)) and await token_annotator(connection) is None:
        raise _refused("this needs the API key, the read key or an annotator's token")


async def require_tagger(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Lets every request through while tagging is open (``XLGEN_OPEN_TAGGING``); else as :func:`require_member`."""
    if not connection.app.state.runtime.settings.open_tagging:
        await require_member(connection, handler)


def acting_annotator(connection: ASGIConnection, given: str, field: str = "annotator") -> str:
    """The annotator a request acts as: the token's, or ``given`` with the API key.

    Raises:
        PermissionDeniedException: A token's request naming another annotator in ``field`` (403).
    """
    name = token_of(connection)
    if name is None:
        return given
    if given and given != name:
        message = f"this token belongs to {name!r}, not {given!r}"
        raise PermissionDeniedException(f"{field}: {message}", extra=[{"key": field, "message": message}])
    return name


def token_of(connection: ASGIConnection) -> str | None:
    """The annotator whose token authorised the request (None for a key, or when no guard looked)."""
    name = connection.scope.get(SCOPE_KEY)  # type: ignore[call-overload]
    return None if name is None else str(name)


def forbidden(field: str, message: str) -> PermissionDeniedException:
    """A 403 whose ``extra`` names the field a token may not set."""
    return PermissionDeniedException(f"{field}: {message}", extra=[{"key": field, "message": message}])


WRITE = [require_api_key]
ANNOTATE = [require_annotator]
READ = [require_reader]
MEMBERS = [require_member]
TAG = [require_tagger]
GUARDS = (require_api_key, require_annotator, require_reader, require_member)
"""The guards that answer 401 (see :func:`xlgen.service.errors.document_errors`)."""
