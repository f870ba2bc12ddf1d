"""Second opinions on suggested labels from an OpenAI-compatible chat model (filled in below)."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
