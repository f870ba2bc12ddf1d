"""The annotation page and the progress view, served by the service itself (Jinja templates and one
plain JavaScript file, no build step): ``/annotate`` and ``/progress``. The pages call the JSON API
with the annotator's token (or the API key) from the browser tab's session storage, so two tabs or
browsers can sign in as two annotators.
"""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from xlgen.service.runtime import Runtime

HERE = Path(__file__).resolve().parent
TEMPLATES = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def _context(rt: Runtime, page: str) -> dict[str, object]:
    s = rt.settings
    return {"page": page, "auth_required": bool(s.api_key), "second_opinion": bool(s.llm_url), "llm_model": s.llm_model}


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
