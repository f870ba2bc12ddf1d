"""Building and loading the T5 model: named presets built from a config, or a pretrained checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import T5Config, T5ForConditionalGeneration


@dataclass(frozen=True)
class Preset:
    """Shape of a T5 built from scratch.

    Attributes:
        d_model: Hidden size.
        d_ff: Feed-forward size.
        num_layers: Encoder layers.
        num_decoder_layers: Decoder layers (labels are short, so fewer than the encoder).
        num_heads: Attention heads.
        d_kv: Size of each head.
        dropout_rate: Dropout everywhere.
        vocab_size: SentencePiece vocabulary to train for this preset.
    """

    d_model: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    d_kv: int
    dropout_rate: float = 0.1
    vocab_size: int = 8000


PRESETS: dict[str, Preset] = {
    # For tests: trains in a second.
    "tiny": Preset(d_model=32, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, vocab_size=600),
    # The CPU default: learns GoEmotions in minutes on two cores.
    "cpu": Preset(d_model=256, d_ff=512, num_layers=3, num_decoder_layers=2, num_heads=4, d_kv=64),
    # Larger shapes for a GPU, still from scratch (the shape of t5-small and t5-base).
    "small": Preset(d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, d_kv=64, vocab_size=16000),
    "base": Preset(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, d_kv=64, vocab_size=32000),
}


def build_from_preset(name: str, vocab_size: int, pad_id: int, eos_id: int) -> T5ForConditionalGeneration:
    """A randomly initialised T5 of preset ``name`` for a tokenizer of ``vocab_size`` ids."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return build_t5(PRESETS[name], vocab_size, pad_id, eos_id)


def build_t5(p: Preset, vocab_size: int, pad_id: int, eos_id: int) -> T5ForConditionalGeneration:
    """A randomly initialised T5 of shape ``p`` (gated GELU, ``pad_id`` also the decoder start)."""
    config = T5Config(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        d_model=p.d_model,
        d_ff=p.d_ff,
        d_kv=p.d_kv,
        num_layers=p.num_layers,
        num_decoder_layers=p.num_decoder_layers,
        num_heads=p.num_heads,
        dropout_rate=p.dropout_rate,
        feed_forward_proj="gated-gelu",
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        decoder_start_token_id=pad_id,
    )
    return T5ForConditionalGeneration(config)


def load_pretrained(name_or_path: str, vocab_size: int) -> T5ForConditionalGeneration:
    """Loads a pretrained T5 (hub name or local directory) and fits its embeddings to the tokenizer."""
    model = T5ForConditionalGeneration.from_pretrained(name_or_path)
    if model.get_input_embeddings().weight.shape[0] < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


@dataclass(frozen=True)
class LoraSettings:
    """LoRA through peft.

    Attributes:
        r: Rank.
        alpha: Scaling numerator.
        dropout: Dropout on the LoRA path.
        target_modules: T5 linear layers to adapt.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q", "k", "v", "o", "wi_0", "wi_1", "wo")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError("LoRA rank must be at least 1")


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wraps ``model`` in a peft LoRA model; the embeddings and LM head stay trainable so that new
    special tokens learn."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=["shared", "lm_head"],
    )
    return get_peft_model(model, config)


def base_model(model: torch.nn.Module) -> T5ForConditionalGeneration:
    """The plain T5 under a peft or DDP wrapper (for ``generate`` and the encoder)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module  # type: ignore[assignment]
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()  # type: ignore[operator]
    return model  # type: ignore[return-value]
