"""The API key guard of every write endpoint."""

from __future__ import annotations

import base64
import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

HEADER = "X-API-Key"


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


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Lets the request through when no key is configured or it presents the key; else 401."""
    expected = connection.app.state.runtime.settings.api_key
    if expected and not hmac.compare_digest(presented_key(connection).encode(), expected.encode()):
        raise NotAuthorizedException(f"missing or wrong API key: send it in the {HEADER} header")


WRITE = [require_api_key]
