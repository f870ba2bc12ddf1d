"""Training a label generator: ``setup -> build -> fit -> finish``, an explicit accelerate loop.

The same file runs on one CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` on several
processes (distributed data parallel): ``python -m xlgen.training.train --help``.

Run folder layout (``output_dir``):

* ``model/``: the final model directory (best dev checkpoint, threshold tuned on dev).
* ``train_log.jsonl``: one JSON object per evaluation and at the end.
* ``metrics.json``: final dev and test metrics.
* ``checkpoint/`` and ``best/``: resume state and best-so-far model while training; removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import set_seed

from xlgen.backends.batching import pad_batch
from xlgen.config import HelpFormatter, from_arguments
from xlgen.config import add_arguments as config_arguments
from xlgen.data import DataError, Document, data_hash, find_split, read_documents
from xlgen.decoding import DecodingConfig
from xlgen.devices import bf16_supported, cpu_bf16_native, resolve_device
from xlgen.digests import state_digest
from xlgen.evaluation import Evaluator
from xlgen.fusion import GeneratorGate, gate_generator
from xlgen.guidance import Example, label_inputs
from xlgen.initialization import init_embeddings
from xlgen.labels import LabelSpace, simulate_pu
from xlgen.metrics import tune_threshold
from xlgen.model import ModelSettings, XLGenModel
from xlgen.modeling import PRESETS, LoraSettings, apply_lora, build_from_preset, load_pretrained
from xlgen.progress import progress_bar, write
from xlgen.tokenizer import (
    DEFAULT_CLUSTER_TOKENS,
    PretrainedTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    encode_target,
    load_tokenizer,
)
from xlgen.training.config import TrainConfig
from xlgen.training.guidance import Objective, build_guidance

log = logging.getLogger("xlgen.train")


class TrainingError(ValueError):
    """A run cannot start or continue; the message says why."""


# ---------------------------------------------------------------------------------------------- setup


def load_splits(cfg: TrainConfig) -> tuple[list[Document], list[Document], list[Document] | None]:
    """Train, dev and (if present) test documents; the PU simulation applies to train only."""
    train_path = Path(cfg.train_file) if cfg.train_file else find_split(cfg.data, "train")
    dev_path = Path(cfg.dev_file) if cfg.dev_file else find_split(cfg.data, "dev")
    test_path: Path | None = Path(cfg.test_file) if cfg.test_file else None
    if test_path is None:
        try:
            test_path = find_split(cfg.data, "test")
        except DataError:
            test_path = None
    train = read_documents(train_path)[: cfg.train_limit]
    train = simulate_pu(train, cfg.deficit_rate, cfg.seed)
    dev = read_documents(dev_path)
    test = read_documents(test_path) if test_path and cfg.evaluate_test else None
    return train, dev, test


# ---------------------------------------------------------------------------------------------- build


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a local path (a Hub name is ``model`` or ``owner/model``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def build_tokenizer(cfg: TrainConfig, train: Sequence[Document]) -> Tokenizer:
    """A new SentencePiece model for a preset; the base model's tokenizer otherwise (an xlgen model
    directory as ``--base-model`` continues with its own tokenizer); on the ``sentence-encoder`` backbone, the
    sentence encoder's WordPiece pieces that the train labels (and a ``--label-file``'s) use."""
    if cfg.backbone == "sentence-encoder":
        from xlgen.backbone import encoder_tokenizer, label_tokenizer
        from xlgen.encoders.label_texts import read_label_file

        labels = [x for d in train for x in d.labels] + (list(read_label_file(cfg.label_file)) if cfg.label_file else [])
        return label_tokenizer(encoder_tokenizer(cfg.encoder), labels)
    if cfg.base_model and (Path(cfg.base_model) / "xlgen.json").is_file():
        return load_tokenizer(cfg.base_model)
    if cfg.base_model and not Path(cfg.base_model).is_dir() and _looks_like_path(cfg.base_model):
        raise TrainingError(f"--base-model {cfg.base_model}: no such directory")
    if cfg.base_model:
        return PretrainedTokenizer.from_pretrained(cfg.base_model, DEFAULT_CLUSTER_TOKENS)
    return SentencePieceTokenizer.train(
        [d.text for d in train],
        [x for d in train for x in d.labels],
        vocab_size=cfg.vocab_size or PRESETS[cfg.preset].vocab_size,
        seed=cfg.seed,
    )


def build_model(cfg: TrainConfig, tok: Tokenizer, label_space: LabelSpace, train: Sequence[Document],
                work_dir: Path | None = None) -> XLGenModel:
    """The untrained model: a preset from scratch or a pretrained checkpoint (optionally LoRA), with
    its guidance (:func:`xlgen.training.guidance.build_guidance`, kept in ``work_dir``)."""
    if cfg.backbone == "sentence-encoder":
        from xlgen.backbone import DecoderShape, build_generator, encoder_width

        shape = DecoderShape(cfg.reader_layers, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ff)
        t5 = build_generator(len(tok), encoder_width(cfg.encoder), shape, tok.pad_id, tok.eos_id)
    elif cfg.base_model:
        t5 = load_pretrained(cfg.base_model, len(tok))
    else:
        t5 = build_from_preset(cfg.preset, len(tok), tok.pad_id, tok.eos_id)
        if cfg.embedding_init == "corpus":
            init_embeddings(t5, train, tok, label_space.labels, cfg.seed)
    model = apply_lora(t5, LoraSettings(r=cfg.lora_r, alpha=2 * cfg.lora_r)) if cfg.lora else t5
    settings = ModelSettings(
        source=f"encoder:{cfg.encoder}" if cfg.backbone == "sentence-encoder" else cfg.base_model or f"preset:{cfg.preset}",
        backbone=cfg.backbone,
        max_input_length=cfg.max_input_length,
        max_target_length=cfg.max_target_length,
        label_order=cfg.label_order,
        lora=cfg.lora,
        variant=cfg.variant,
    )
    guidance = build_guidance(cfg, train, t5.config.d_model, Path(work_dir or Path(cfg.output_dir) / "checkpoint"))
    if cfg.backbone == "sentence-encoder" and cfg.decoder_init == "encoder":
        from xlgen.backbone import init_from_encoder

        st = guidance.retriever.encoder.model  # type: ignore[union-attr]
        copied = init_from_encoder(t5, tok, st[0].auto_model.get_input_embeddings().weight, st.tokenizer)  # type: ignore[arg-type]
        log.info("%d of %d label-piece embeddings start from the sentence encoder's", copied, len(tok))
    return XLGenModel(model, tok, label_space, settings, data_hash=data_hash(train), guidance=guidance,
                      decoding=DecodingConfig(max_new_tokens=cfg.max_target_length), data_license=cfg.data_license or "")


class BucketBatchSampler:
    """Shuffled batches of documents of similar length (less padding), reshuffled each epoch.

    Documents are shuffled, cut into pools of 50 batches, sorted by length inside each pool, batched,
    and the batches shuffled again. Set ``epoch`` before iterating.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        pool = self.batch_size * 50
        batches = []
        for start in range(0, len(idx), pool):
            chunk = sorted(idx[start : start + pool], key=lambda i: self.lengths[i])
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def training_examples(xm: XLGenModel, train: Sequence[Document]) -> list[Example]:
    """Every training example, tokenised once: one label example per document, plus whatever the
    guidance adds (``mcg``: a cluster-task example per document, its label inputs carrying the gold
    clusters)."""
    if xm.guidance is None:
        return [Example(ids, i) for i, ids in enumerate(label_inputs(xm, [d.text for d in train]))]
    return xm.guidance.training_examples(xm, train)


class Collator:
    """Example indices -> padded tensors; label targets are ordered per the config (``random`` draws
    a new order per document and epoch); examples of a guidance's own task get its targets, and
    batches carry the guidance's extra tensors (``bcl``: the documents' multi-hot clusters)."""

    def __init__(self, xm: XLGenModel, train: Sequence[Document], examples: Sequence[Example], sampler: BucketBatchSampler, seed: int):
        self.xm, self.train, self.examples, self.sampler, self.seed = xm, train, examples, sampler, seed

    def __call__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        s, g = self.xm.settings, self.xm.guidance
        targets = []
        for j in idx:
            ex = self.examples[j]
            doc = self.train[ex.doc]
            target = g.target(self.xm, ex, doc) if g is not None else None
            if target is None:
                rng = random.Random(hash((self.seed, self.sampler.epoch, j)))
                labels = self.xm.label_space.order(doc.labels, s.label_order, rng)
                target = encode_target(self.xm.tokenizer, labels, s.max_target_length)
            targets.append(target)
        input_ids, mask = pad_batch([self.examples[j].input_ids for j in idx], self.xm.tokenizer.pad_id, "cpu")
        labels_t, _ = pad_batch(targets, -100, "cpu")
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels_t}
        if self.xm.reads_encoder_states:  # the frozen token states the <text> positions take
            from xlgen.backbone import TEXT, EmbeddedInput, padded_states

            text_id = self.xm.tokenizer.token_id(TEXT)
            rows = [EmbeddedInput(self.examples[j].input_ids, g.text_states(self.examples[j].doc,  # type: ignore[union-attr]
                                                                            self.examples[j].input_ids.count(text_id)))
                    for j in idx]
            batch["text_states"] = padded_states(rows, input_ids.shape[1], self.xm.t5.config.d_model)  # (batch, len, width)
        if g is not None:
            batch.update(g.batch_extras([self.train[self.examples[j].doc] for j in idx]))
        return batch


# ---------------------------------------------------------------------------------------------- fit


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, head: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW (or Adafactor) with three groups: embeddings (own learning rate when built from a
    preset), other matrices (weight decay), vectors (no weight decay); the ``bcl`` head's
    parameters join the matrices and vectors."""
    emb = model.get_input_embeddings().weight  # type: ignore[operator]
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    emb_scale = cfg.embedding_lr_scale if not cfg.base_model else 1.0
    groups = [
        {"params": [p for p in params if p is emb], "weight_decay": 0.0, "lr": cfg.lr * emb_scale},
        {"params": [p for p in params if p is not emb and p.ndim >= 2], "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": cfg.lr},
    ]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=cfg.lr, scale_parameter=True, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _mixed_precision(cfg: TrainConfig, device: str) -> str:
    """The precision accelerate trains in on ``device``: ``auto`` is bf16 on a CUDA GPU that supports it,
    else float32 (on a CPU, bf16 is asked for explicitly: it changes the numbers the defaults reproduce).

    Raises:
        TrainingError: fp16 on a CPU, where accelerate would silently train in float32.
    """
    if cfg.mixed_precision == "auto":
        return "bf16" if bf16_supported(device) else "no"
    if device == "cpu" and cfg.mixed_precision == "fp16":
        raise TrainingError("--mixed-precision fp16 needs a CUDA device; on a CPU use bf16 (fast with AMX or AVX512-BF16) or no")
    if device == "cpu" and cfg.mixed_precision == "bf16" and not cpu_bf16_native():
        log.warning("this CPU has no bfloat16 instructions (AMX or AVX512-BF16): bf16 is emulated and likely slower than --mixed-precision no")
    return cfg.mixed_precision


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def fit(cfg: TrainConfig, xm: XLGenModel, train: Sequence[Document], dev: Sequence[Document], accelerator: Accelerator) -> None:
    """Trains ``xm.model`` in place, keeping the best dev checkpoint in ``output_dir/best``.

    Resumes from ``output_dir/checkpoint`` when it holds a run of the same configuration.
    """
    out = Path(cfg.output_dir)
    ckpt = out / "checkpoint"
    examples = training_examples(xm, train)  # tokenised once, for the bucketing and the batches
    sampler = BucketBatchSampler([len(x.input_ids) for x in examples], cfg.batch_size, cfg.seed)
    loader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
        range(len(examples)), batch_sampler=sampler, collate_fn=Collator(xm, train, examples, sampler, cfg.seed)  # type: ignore[arg-type]
    )
    steps_per_epoch = math.ceil(len(sampler) / accelerator.num_processes / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    text_id = None
    if xm.reads_encoder_states:
        from xlgen.backbone import TEXT

        text_id = xm.tokenizer.token_id(TEXT)
    objective = Objective(xm.model, xm.guidance, cfg.label_smoothing, text_id)
    optimizer = build_optimizer(cfg, xm.model, objective.head)
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )
    model, optimizer, dl, scheduler = accelerator.prepare(objective, optimizer, loader, scheduler)

    state: dict = {"global_step": 0, "epoch": 0, "batches_done": 0, "best": -1.0, "best_step": 0, "bad_evals": 0}
    if cfg.resume and (ckpt / "trainer_state.json").is_file():
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        if saved["fingerprint"] != cfg.fingerprint():
            raise TrainingError(f"{ckpt} belongs to a run with another configuration; use another --output-dir or --overwrite")
        accelerator.load_state(str(ckpt / "state"))
        state = saved["state"]
        accelerator.print(f"resuming at step {state['global_step']} (epoch {state['epoch']})")
    # checkpoints are chosen by the generator's own labels (a fused score would mostly measure the retriever)
    evaluator = Evaluator(list(dev)[: cfg.dev_limit], DecodingConfig(strategy="greedy", batch_size=128), prefix="dev_",
                          scoring="generator")
    eval_every = cfg.eval_every or steps_per_epoch
    bar = progress_bar(total=total_steps, initial=state["global_step"], desc="train", disable=not (cfg.progress and accelerator.is_main_process))
    started = time.time()
    while state["global_step"] < total_steps:
        sampler.epoch = state["epoch"]
        model.train()
        batches = accelerator.skip_first_batches(dl, state["batches_done"]) if state["batches_done"] else dl
        for batch in batches:
            with accelerator.accumulate(model):
                loss, parts = model(**batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=state["epoch"], **{k: f"{v:.3f}" for k, v in parts.items() if k != "xent"})
            done = state["global_step"] >= total_steps
            if state["global_step"] % eval_every == 0 or done:
                stop = _evaluate_and_checkpoint(cfg, xm, evaluator, accelerator, state, loss.item(), time.time() - started)
                model.train()
                if stop or done:
                    state["global_step"] = total_steps if stop else state["global_step"]
                    break
        else:
            state["epoch"] += 1
            state["batches_done"] = 0
    bar.close()
    accelerator.wait_for_everyone()


def _evaluate_and_checkpoint(
    cfg: TrainConfig, xm: XLGenModel, evaluator: Evaluator, accelerator: Accelerator, state: dict, loss: float, elapsed: float
) -> bool:
    """Evaluates on dev (main process), saves the best model and the resume state; True to stop early."""
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        view = xm  # shares its parameters with the prepared (possibly DDP-wrapped) module
        metrics = evaluator(view)
        score = metrics["dev_" + Evaluator.primary_metric]
        improved = score > state["best"]
        if improved:
            state.update(best=score, best_step=state["global_step"], bad_evals=0)
            view.save(out / "best")
        else:
            state["bad_evals"] += 1
        _append_log(
            out / "train_log.jsonl",
            {"step": state["global_step"], "epoch": state["epoch"], "loss": loss, "elapsed_s": round(elapsed, 1), **metrics},
        )
        write(f"step {state['global_step']}: dev micro-F1 {score:.4f} (best {state['best']:.4f} at {state['best_step']})")
        if state["bad_evals"] >= cfg.patience:
            write(f"early stop: {cfg.patience} evaluations without improvement")
            accelerator.set_trigger()
    stop = accelerator.check_trigger()
    # every rank must agree on the trainer state (best, counters) before it is written
    synced = [state]
    if accelerator.num_processes > 1:
        torch.distributed.broadcast_object_list(synced, src=0)
    state.update(synced[0])
    accelerator.save_state(str(out / "checkpoint" / "state"))
    if accelerator.is_main_process:
        tmp = out / "checkpoint" / "trainer_state.json.tmp"
        tmp.write_text(json.dumps({"fingerprint": cfg.fingerprint(), "state": state}))
        os.replace(tmp, out / "checkpoint" / "trainer_state.json")
    accelerator.wait_for_everyone()
    return stop


# ---------------------------------------------------------------------------------------------- finish


def finish(cfg: TrainConfig, dev: Sequence[Document], test: Sequence[Document] | None, xm: XLGenModel) -> dict[str, float]:
    """Loads the best checkpoint, tunes the threshold (and the guidance's own settings) on all of dev
    with the default decoding, evaluates on test, and saves ``output_dir/model``."""
    out = Path(cfg.output_dir)
    best = XLGenModel.load(out / "best", device=xm.device)
    gold = [d.labels for d in dev]
    extra: dict[str, float] = {}
    if cfg.generator == "never":  # no generator trained: the retriever stage alone, its threshold tuned on dev
        best.generator_gate = GeneratorGate(False, "never", "retriever stage alone (--generator never)")
        oof = None
    else:
        # a guidance that calibrates scores (retrieval: the fusion's generator stage) fits on dev first;
        # the threshold is then tuned on its out-of-fold scores, not on scores of the documents it fitted
        oof = best.guidance.calibrate(best, dev) if best.guidance is not None else None
    if oof is not None:
        best.threshold, extra["dev_oof_micro_f1"] = tune_threshold(gold, oof, best.decoding.min_labels)
        without = getattr(best.guidance, "without_generator", None)
        if without is not None:  # the dev gate: does the generator stage beat the same calibration without it?
            best.generator_gate = gate_generator(cfg.generator, gold, oof, without, best.decoding.min_labels)
            log.info("%s", best.generator_gate.reason)
            extra.update({f"dev_oof_{k}_without_generator": v for k, v in best.generator_gate.dev_without.items() if k != "threshold"})
            oof = oof if best.generator_gate.serve else None
    dev_eval = Evaluator(dev, prefix="dev_", progress=cfg.progress).run(best, tune=oof is None, tune_clusters=True)
    best.threshold = dev_eval.metrics["dev_threshold"]
    if best.guidance is not None:
        best.guidance.adopt(dev_eval.metrics, prefix="dev_")
    metrics = {**dev_eval.metrics, **extra}
    if test:
        metrics.update(Evaluator(test, prefix="test_", progress=cfg.progress)(best))
    best.metrics = metrics
    best.save(out / "model")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if best.generator_gate is not None:
        _append_log(out / "train_log.jsonl", {"generator_gate": best.generator_gate.to_dict()})
    return metrics


# ---------------------------------------------------------------------------------------------- run


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        metrics: Final dev and test metrics (empty on processes other than the main one).
        model_dir: The saved model directory.
        weights_digest: :func:`xlgen.digests.state_digest` of this process's weights at the end of the
            loop; equal on every rank of a distributed run.
    """

    metrics: dict[str, float]
    model_dir: Path
    weights_digest: str


def run(cfg: TrainConfig) -> TrainResult:
    """Trains, evaluates and saves ``output_dir/model``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device("auto")
    precision = _mixed_precision(cfg, device)
    shared = AcceleratorState._shared_state
    if shared.get("_mixed_precision") not in (None, precision) and PartialState().num_processes == 1:
        # accelerate keeps a process's first precision and refuses another: one process training again in
        # another precision (a notebook, a comparison) starts its state afresh
        AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum, cpu=device == "cpu")
    out = Path(cfg.output_dir)
    if (out / "model" / "xlgen.json").is_file() and not (out / "checkpoint").exists() and not cfg.overwrite:
        raise TrainingError(f"{out / 'model'} already holds a finished model; pass --overwrite to train again")
    if cfg.overwrite and accelerator.is_main_process:
        for sub in ("checkpoint", "best", "model"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "train_log.jsonl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)
    train, dev, test = load_splits(cfg)
    out.mkdir(parents=True, exist_ok=True)
    label_space = LabelSpace.from_documents(train)
    ckpt = out / "checkpoint"
    if cfg.resume and (ckpt / "tokenizer").is_dir():
        tok = load_tokenizer(ckpt / "tokenizer")
    else:
        if accelerator.is_main_process:
            build_tokenizer(cfg, train).save(ckpt / "tokenizer")
            (ckpt / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        accelerator.wait_for_everyone()
        tok = load_tokenizer(ckpt / "tokenizer")
    set_seed(cfg.seed)  # same initial weights on every rank, whatever the tokenizer training consumed
    with accelerator.main_process_first():  # one process builds the clustering, the others read it
        xm = build_model(cfg, tok, label_space, train)
    xm.device = str(accelerator.device)
    xm.to(str(accelerator.device))
    accelerator.print(
        f"train {len(train)} docs, dev {len(dev)}, test {len(test) if test else 0}; {len(label_space)} labels; "
        f"vocab {len(tok)}; {sum(p.numel() for p in xm.model.parameters()) / 1e6:.1f}M parameters on {accelerator.device}"
    )
    if cfg.generator == "never":  # the retriever stage alone: no generator steps, the model saved as built
        if accelerator.is_main_process:
            xm.save(out / "best")
        accelerator.wait_for_everyone()
    else:
        fit(cfg, xm, train, dev, accelerator)
    digest = state_digest(xm.model)
    metrics: dict[str, float] = {}
    if accelerator.is_main_process:
        metrics = finish(cfg, dev, test, xm)
        _append_log(out / "train_log.jsonl", {"final": True, **metrics})
        shutil.rmtree(out / "best", ignore_errors=True)
        shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(metrics, out / "model", digest)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``xlgen train`` (one per :class:`TrainConfig` field)."""
    config_arguments(parser, TrainConfig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xlgen.training.train``: the same options as ``xlgen train``; runs unchanged under
    ``accelerate launch`` or ``torchrun``."""
    parser = argparse.ArgumentParser(prog="python -m xlgen.training.train", description=__doc__, formatter_class=HelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = from_arguments(TrainConfig, args)
        metrics = run(cfg).metrics
    except (DataError, TrainingError, ValueError, OSError, ImportError) as e:
        parser.exit(2, f"error: {' '.join(str(e).split())}\n")
    if metrics:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
