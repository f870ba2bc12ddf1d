"""Every module of the project imports first, alone, in a fresh interpreter: no import cycle hides
behind an import order.

One interpreter imports the third-party libraries (torch, transformers, ...: seconds each, and never a
project module), then forks one child per project module, which imports that module alone: each child
starts with no project module loaded, as a fresh interpreter does, without paying for torch again.
Each module's outcome is its own test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.unit.test_architecture import PACKAGES, ROOT, project_modules

MODULES = sorted(project_modules())
LIBRARIES = ("numpy", "scipy", "sklearn", "torch", "transformers", "peft", "accelerate", "tokenizers", "sentencepiece",
             "sentence_transformers", "safetensors", "litestar", "msgspec", "sqlalchemy", "alembic", "httpx", "matplotlib",
             "onnxruntime", "ctranslate2", "tqdm", "prometheus_client", "uvicorn")

CHILDREN = r'''
import json, os, sys, traceback
packages, modules, libraries = json.loads(sys.argv[1])
for lib in libraries:
    try:
        __import__(lib)
    except Exception:
        pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in packages)
if loaded:
    raise SystemExit(f"project modules loaded before forking: {loaded}")
out = {}
for module in modules:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(module)
            code, message = 0, ""
        except BaseException:
            code, message = 1, traceback.format_exc()
        os.write(w, message[-4000:].encode())
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        message = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    out[module] = [os.waitstatus_to_exitcode(status), message]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list]:
    args = json.dumps([list(PACKAGES), MODULES, list(LIBRARIES)])
    r = subprocess.run([sys.executable, "-c", CHILDREN, args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_on_its_own(module: str, outcomes: dict[str, list]) -> None:
    """Importing one module first, alone, with no other project module loaded, works (no order-dependent cycle)."""
    code, message = outcomes[module]
    assert code == 0, message
