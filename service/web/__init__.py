"""The annotation page and the progress view, served by the service itself (Jinja templates and one
plain JavaScript file, no build step): ``/annotate`` and ``/progress``. The pages call the JSON API
with the annotator's token (or the API key) from the browser tab's session storage, so two tabs or
browsers can sign in as two annotators.
"""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import MutableScopeHeaders
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Message, Scope

from xlgen.service.runtime import Runtime

HERE = Path(__file__).resolve().parent

PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""The pages' Content-Security-Policy: their one script and style sheet from the service, no inline code, never framed."""
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"))


async def security_headers(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: every response is ``nosniff``, never framed, sends no referrer; the service's own
    HTML pages (not the OpenAPI viewers under ``/schema``, which load their scripts from elsewhere) get
    :data:`PAGE_POLICY`."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS:
        headers[name.decode()] = value.decode()
    if headers.get("content-type", "").startswith("text/html") and not scope.get("path", "").startswith("/schema"):
        headers["content-security-policy"] = PAGE_POLICY
TEMPLATES = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def _context(rt: Runtime, page: str) -> dict[str, object]:
    s = rt.settings
    # a key always exists (the configured one or the one the service made), so signing in is always asked for
    return {"page": page, "auth_required": True, "second_opinion": bool(s.llm_url), "llm_model": s.llm_model}


@get("/", include_in_schema=False)
async def root() -> Redirect:
    return Redirect("/annotate")


@get("/annotate", include_in_schema=False)
async def annotate_page(rt: Runtime) -> Template:
    return Template(template_name="annotate.html", context=_context(rt, "annotate"))


@get("/progress", include_in_schema=False)
async def progress_page(rt: Runtime) -> Template:
    return Template(template_name="progress.html", context=_context(rt, "progress"))


STATIC = create_static_files_router(path="/static", directories=[HERE / "static"], include_in_schema=False)

ROUTES = [root, annotate_page, progress_page, STATIC]
