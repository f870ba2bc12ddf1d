"""CUDA paths: run on a machine with a GPU, skipped (not failed) without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_cuda_decoding_agrees_with_cpu(tiny_model_dir: Path) -> None:
    from xlgen.decoding import DecodingConfig
    from xlgen.model import XLGenModel

    texts = ["thank you so much", "this is so annoying", "wow I did not expect that"]
    cfg = DecodingConfig(max_new_tokens=16)
    cpu = XLGenModel.load(tiny_model_dir, device="cpu", backend="torch").predict(texts, cfg)
    gpu = XLGenModel.load(tiny_model_dir, device="cuda", backend="torch").predict(texts, cfg)
    for a, b in zip(cpu, gpu, strict=True):
        assert a.labels[:1] == b.labels[:1]
        assert a.scores[:1] == pytest.approx(b.scores[:1], abs=1e-3)


def test_bf16_is_reported_where_the_gpu_has_it() -> None:
    from xlgen.devices import bf16_supported, resolve_device

    assert resolve_device("auto") == "cuda"
    assert bf16_supported("cuda") == torch.cuda.is_bf16_supported()
    assert not bf16_supported("cpu")
