"""The Litestar application: ``create_app()`` (also ``uvicorn --factory service.app:create_app``).

Settings come from the environment (:mod:`service.settings`); the lifespan opens storage, starts
the micro-batcher and loads the model in the background, so ``/health/live`` answers at once and
``/health/ready`` says 503 until the model is there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from service import labelstudio, routes
from service.auth import HEADER
from service.metrics import RequestMetricsMiddleware, configure_logging
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger("xlgen.service")


def _runtime(state: State) -> Runtime:
    return state.runtime


def _http_error(request: Request, exc: HTTPException) -> Response:
    """Every client or server error as ``{status_code, detail[, extra]}`` JSON."""
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.status_code == 413:
        body["detail"] = f"request body too large: at most {request.app.state.runtime.settings.max_body_bytes} bytes"
        body["extra"] = [{"key": "body", "message": body["detail"]}]
    elif exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
    return Response({"status_code": 500, "detail": "internal server error"}, status_code=HTTP_500_INTERNAL_SERVER_ERROR)


def create_app(settings: Settings | None = None) -> Litestar:
    """The service app.

    Args:
        settings: Defaults to :meth:`Settings.from_env`.
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await runtime.startup()
        try:
            yield
        finally:
            await runtime.shutdown()

    openapi = OpenAPIConfig(
        title="xlgen",
        version="1",
        description="Extreme multi-label tagging by label generation, with active learning and retraining.",
        components=Components(security_schemes={"apiKey": SecurityScheme(type="apiKey", name=HEADER, security_scheme_in="header")}),
    )
    return Litestar(
        route_handlers=[*routes.ROUTES, *labelstudio.ROUTES],
        dependencies={"rt": Provide(_runtime, sync_to_thread=False)},
        state=State({"runtime": runtime}),
        lifespan=[lifespan],
        middleware=[RequestMetricsMiddleware(runtime.metrics)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        openapi_config=openapi,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
    )
