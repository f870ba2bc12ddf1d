#!/usr/bin/env bash
# mypy over the installed layout: service/, training/ and clustering/ install as xlgen.service, xlgen.training
# and xlgen.clustering (pyproject.toml's package-dir), which mypy cannot map itself. A tree of links under
# build/typecheck gives it that layout, so that the code's own imports (xlgen.service.settings, ...) resolve
# to the source files and are checked instead of read as untyped.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/xlgen"
for f in xlgen/*; do ln -s "$PWD/$f" "$tree/xlgen/"; done
for p in service training clustering; do ln -s "$PWD/$p" "$tree/xlgen/$p"; done
exec .venv/bin/mypy "$@" "$tree/xlgen"
