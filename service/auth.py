"""Who may write: the API key (every write endpoint) or a per-annotator token (the annotators' endpoints).

The key is the deployment's ``XLGEN_API_KEY``; a token is made for one annotator by ``POST /v1/annotators``
(with the key) and only its SHA-256 is stored. A request with a token acts as its annotator: an
``annotator`` field naming someone else is refused (403). Without a configured key nothing is checked.
"""

from __future__ import annotations

import asyncio
import base64
import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

HEADER = "X-API-Key"
SCOPE_KEY = "xlgen_annotator"
"""Where the guard leaves the token's annotator in the request scope (absent for the key)."""


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


def has_api_key(connection: ASGIConnection) -> bool:
    """Whether the request presents the API key (True when none is configured)."""
    expected = connection.app.state.runtime.settings.api_key
    return not expected or hmac.compare_digest(presented_key(connection).encode(), expected.encode())


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through when no key is configured or it presents the key; else 401."""
    if not has_api_key(connection):
        raise NotAuthorizedException(f"missing or wrong API key: send it in the {HEADER} header")


async def token_annotator(connection: ASGIConnection) -> str | None:
    """The annotator whose token the request presents, left in the request scope for :func:`acting_annotator`;
    None when it presents none that is known."""
    name = await asyncio.to_thread(connection.app.state.runtime.storage.annotator_of_token, presented_key(connection))
    if name is not None:
        connection.scope[SCOPE_KEY] = name  # type: ignore[literal-required]
    return name


async def require_annotator(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through with the API key, or with an annotator's token (then it acts as that
    annotator); else 401."""
    if not has_api_key(connection) and await token_annotator(connection) is None:
        raise NotAuthorizedException(f"missing or wrong API key or annotator token: send it in the {HEADER} header")


def acting_annotator(connection: ASGIConnection, given: str, field: str = "annotator") -> str:
    """The annotator a request acts as: the token's, or ``given`` with the API key.

    Raises:
        PermissionDeniedException: A token's request naming another annotator in ``field`` (403).
    """
    name = connection.scope.get(SCOPE_KEY)  # type: ignore[call-overload]
    if name is None:
        return given
    if given and given != name:
        message = f"this token belongs to {name!r}, not {given!r}"
        raise PermissionDeniedException(f"{field}: {message}", extra=[{"key": field, "message": message}])
    return str(name)


WRITE = [require_api_key]
ANNOTATE = [require_annotator]
