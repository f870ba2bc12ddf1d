"""Guidance: what conditions generation beyond the text, one module per kind behind one interface
(:class:`xlgen.guidance.base.Guidance`) and this registry.

* ``bcl``: an auxiliary multi-cluster head trained beside generation (:mod:`xlgen.guidance.bcl`);
* ``mcg``: cluster tokens generated first, then appended to the label input (:mod:`xlgen.guidance.mcg`);
* ``retrieval``: the label retriever's best candidates appended to the input, and the generator's
  labels fused with the retriever's scores (:mod:`xlgen.guidance.retrieval`).

A model's ``variant`` is ``base`` (no guidance) or one of these names. Kinds are imported when
first used, so that loading a model imports only the libraries its own guidance needs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from xlgen.guidance.base import Example, Guidance, GuidedModel, Plan, label_inputs

__all__ = ["GUIDANCE", "VARIANTS", "Example", "Guidance", "GuidedModel", "Plan", "guidance_class", "label_inputs", "load_guidance"]

GUIDANCE: dict[str, str] = {
    "bcl": "xlgen.guidance.bcl:BCLGuidance",
    "mcg": "xlgen.guidance.mcg:MCGGuidance",
    "retrieval": "xlgen.guidance.retrieval:RetrievalGuidance",
}
"""Guidance kinds by name: ``module:class``."""

VARIANTS = ("base", *GUIDANCE)
"""Model variants: no guidance, or one kind."""


def guidance_class(name: str) -> type[Guidance]:
    """The class registered as ``name``.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in GUIDANCE:
        raise ValueError(f"unknown guidance {name!r}; choose one of {', '.join(GUIDANCE)}")
    module, cls = GUIDANCE[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_guidance(name: str, directory: Path, meta: dict[str, Any]) -> Guidance:
    """Loads the guidance ``name`` saved in ``directory`` with its settings ``meta``."""
    return guidance_class(name).load(directory, meta)
