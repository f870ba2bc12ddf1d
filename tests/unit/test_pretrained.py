"""The pretrained loading path (``--base-model`` a local directory) and LoRA through peft."""

import shutil

import pytest

from xlgen.data import read_documents
from xlgen.model import XLGenModel
from xlgen.modeling import build_from_preset
from xlgen.tokenizer import SentencePieceTokenizer
from xlgen.training.config import TrainConfig
from xlgen.training.train import run


@pytest.fixture(scope="module")
def local_base(tiny_data, tmp_path_factory):
    """A T5 directory as ``save_pretrained`` writes it, with a SentencePiece ``spiece.model``: what a
    downloaded t5-small looks like on disk, at tiny size."""
    docs = read_documents(tiny_data / "train.jsonl")
    tok = SentencePieceTokenizer.train([d.text for d in docs], [x for d in docs for x in d.labels], vocab_size=600, n_cluster_tokens=256)
    path = tmp_path_factory.mktemp("base")
    build_from_preset("tiny", len(tok), tok.pad_id, tok.eos_id).save_pretrained(str(path))
    tok.save(path / "sp")
    shutil.copy(path / "sp" / "spiece.model", path / "spiece.model")
    return path


@pytest.mark.parametrize("lora", [False, True])
def test_train_from_local_pretrained_and_roundtrip(local_base, tiny_data, tmp_path, lora):
    cfg = TrainConfig(data=str(tiny_data), output_dir=str(tmp_path / "run"), base_model=str(local_base), lora=lora,
                      lora_r=4, max_steps=6, eval_every=3, batch_size=16, lr=5e-3, max_target_length=16,
                      max_input_length=48, progress=False)
    result = run(cfg)
    model_dir = result.model_dir
    assert (model_dir / "adapter_config.json").is_file() == lora and (model_dir / "config.json").is_file() != lora
    model = XLGenModel.load(model_dir)
    assert model.settings.lora == lora and model.settings.source == str(local_base)
    assert model.tokenizer.kind == "pretrained"
    texts = ["thank you!", "this is so sad"]
    again = XLGenModel.load(model_dir)
    a, b = model.predict(texts), again.predict(texts)
    assert [(p.labels, p.scores) for p in a] == [(p.labels, p.scores) for p in b]
    if lora:
        trainable = [n for n, p in model.model.named_parameters() if "lora_" in n]
        assert trainable, "the adapter must hold LoRA weights"


def test_continue_from_an_xlgen_model_directory(tiny_model_dir, tiny_data, tmp_path):
    """``--base-model`` naming a model directory continues from its weights with its tokenizer."""
    before = XLGenModel.load(tiny_model_dir)
    cfg = TrainConfig(data=str(tiny_data), output_dir=str(tmp_path / "run"), base_model=str(tiny_model_dir),
                      max_steps=4, eval_every=2, batch_size=16, lr=1e-3, max_target_length=16, max_input_length=48, progress=False)
    after = XLGenModel.load(run(cfg).model_dir)
    assert after.tokenizer.encode("thank you so much") == before.tokenizer.encode("thank you so much")
    assert after.settings.source == str(tiny_model_dir)
    changed = [k for k, v in after.t5.state_dict().items() if not (v == before.t5.state_dict()[k]).all()]
    assert changed, "training must move the weights it continued from"
