"""Which optional extra of the ``xlgen`` package provides what, and the one-line error when one is missing.

The core install (``pip install xlgen``) is what ``xlgen train``, ``predict`` and ``evaluate`` need: torch,
transformers, the packaged sentence encoder and its label retriever. Everything else is an extra
(``pyproject.toml``'s optional dependencies), and code that needs one calls :func:`require` before it imports
it, so that a missing extra is one line naming what to install, not a traceback::

    xlgen serve needs the serve extra: pip install 'xlgen[serve]'
"""

from __future__ import annotations

import importlib.util

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("litestar", "jinja2", "uvicorn", "sqlalchemy", "alembic", "prometheus_client", "httpx"),
    "postgres": ("psycopg",),
    "fast": ("ctranslate2", "onnx", "onnxscript", "faiss"),
    "cpu": ("onnxruntime",),
    "gpu": ("onnxruntime",),
    "llm": ("openai",),
    "finetune": ("datasets",),
    "plots": ("matplotlib",),
    "distill": ("model2vec",),
    "docs": ("mkdocs", "material"),
}
"""Extra -> the modules it brings (import names). ``cpu`` and ``gpu`` are the two flavours of ONNX Runtime,
one module name: install one of them."""


class MissingExtra(ImportError):
    """An optional extra that a command or feature needs is not installed.

    Args:
        what: What needs it, as the user asked for it (``xlgen serve``, ``a PostgreSQL --db-url``).
        extra: The extra's name.
        missing: The modules not found.
    """

    def __init__(self, what: str, extra: str, missing: list[str]) -> None:
        self.what, self.extra, self.missing = what, extra, missing
        super().__init__(message(what, extra))


def message(what: str, extra: str) -> str:
    """The one line that names the extra to install."""
    if extra in ("cpu", "gpu"):
        return f"{what} needs ONNX Runtime: pip install 'xlgen[cpu]' (on CUDA: 'xlgen[gpu]'; never both)"
    return f"{what} needs the {extra} extra: pip install 'xlgen[{extra}]'"


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    if extra not in EXTRAS:
        raise ValueError(f"no extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported."""
    return not missing_modules(extra)


def require(extra: str, what: str) -> None:
    """Raises :class:`MissingExtra` unless every module of ``extra`` can be imported.

    Args:
        extra: The extra's name (a key of :data:`EXTRAS`).
        what: What needs it, the start of the error's sentence.
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(what, extra, missing)
