"""The Litestar application: ``create_app()`` (also ``uvicorn --factory xlgen.service.app:create_app``).

Settings come from the environment (:mod:`xlgen.service.settings`); the lifespan opens storage, starts
the micro-batcher and loads the model in the background, so ``/health/live`` answers at once and
``/health/ready`` says 503 until the model is there.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import HttpMethod, Litestar, MediaType, Response, route
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_204_NO_CONTENT

from xlgen.service import annotators, labelstudio, new_labels, opinions, routes, web
from xlgen.service.auth import HEADER
from xlgen.service.bodies import strict_input
from xlgen.service.errors import document_errors, http_error, server_error
from xlgen.service.metrics import RequestMetricsMiddleware, configure_logging, unmatched_counter
from xlgen.service.openapi import http_handlers, refine_openapi
from xlgen.service.runtime import Runtime
from xlgen.service.settings import Settings

log = logging.getLogger("xlgen.service")


def _runtime(state: State) -> Runtime:
    return state.runtime


def _options_first(handlers: list[Any]) -> list[Any]:
    """``handlers`` with an explicit OPTIONS handler in front for every path that several handlers
    share (``GET`` and ``PUT /v1/model``): the one Litestar adds is made with the first handler's
    route and would leave the later methods out of its ``Allow`` header."""
    methods: dict[str, set[str]] = defaultdict(set)
    for h in handlers:
        if isinstance(h, HTTPRouteHandler):
            for path in h.paths:
                methods[path] |= set(h.http_methods)
    shared = {p: m for p, m in methods.items() if sum(isinstance(h, HTTPRouteHandler) and p in h.paths for h in handlers) > 1}

    def options_for(path: str, allow: str) -> HTTPRouteHandler:
        def options() -> Response:
            return Response(content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allow}, media_type=MediaType.TEXT)

        return route(path, http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False,
                     name=f"options:{path}")(options)

    return [options_for(p, ", ".join(sorted(m | {"OPTIONS"}))) for p, m in shared.items() if "OPTIONS" not in m] + handlers


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
    handlers = [*routes.ROUTES, *labelstudio.ROUTES, *new_labels.ROUTES, *annotators.ROUTES, *opinions.ROUTES, *web.ROUTES]
    app = Litestar(
        route_handlers=_options_first(handlers),
        dependencies={"rt": Provide(_runtime, sync_to_thread=False)},
        state=State({"runtime": runtime}),
        lifespan=[lifespan],
        middleware=[RequestMetricsMiddleware(runtime.metrics)],
        before_request=strict_input,
        before_send=[web.security_headers, unmatched_counter(runtime.metrics)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        openapi_config=openapi,
        template_config=web.TEMPLATES,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
    )
    document_errors(h for _, h in http_handlers(app))
    refine_openapi(app)
    return app
