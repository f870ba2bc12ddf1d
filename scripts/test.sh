#!/usr/bin/env bash
# Sets up .venv, then lint, type check, the docs (built strictly: a warning, a broken link or anchor fails; the
# benchmark tables rendered from benchmarks/results/ must be up to date) and the test suite (what .ci/run runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the annotation page's browser test drives Debian's Chromium: installed here when missing (as root), else it skips
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
            || echo "could not install chromium and chromium-driver: tests/integration/test_annotation_page.py needs them" >&2
    else
        echo "chromium and chromium-driver are missing (install them as root): tests/integration/test_annotation_page.py skips" >&2
    fi
fi
.venv/bin/ruff check .
bash scripts/typecheck.sh
.venv/bin/python benchmarks/render.py --check
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
.venv/bin/python -m pytest "$@"
