"""The training configuration."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from xlgen.backbone import BACKBONES
from xlgen.config import opt
from xlgen.encoders.config import ENCODER_QUANTIZATIONS, STATIC_ENCODERS
from xlgen.fusion import GENERATOR_FEATURE_SETS
from xlgen.guidance import VARIANTS
from xlgen.labels import ORDERS
from xlgen.modeling import PRESETS

DEFAULT_DATA = "data/goemotions"
GENERATOR_GATES = ("auto", "always", "never")
"""``--generator``: whether the saved model serves its generator stage."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved beside its checkpoints so a resumed run can check
    that it continues the same run."""

    data: str = opt(DEFAULT_DATA, "dataset folder holding train/dev/test splits (JSON Lines or XMC raw-text layout)")
    output_dir: str = opt("runs/goemotions", "run folder: the final model goes to OUTPUT_DIR/model")
    train_file: str | None = opt(None, "train split file (overrides DATA)")
    dev_file: str | None = opt(None, "dev split file (overrides DATA)")
    test_file: str | None = opt(None, "test split file (overrides DATA); evaluated after training if present")
    evaluate_test: bool = opt(True, "evaluate on the test split after training, when there is one (off: a later `xlgen evaluate` does it, e.g. on the exported backend)")
    backbone: str = opt("t5", "what reads the document: t5, the T5's own encoder (a --preset from scratch or --base-model); sentence-encoder, the retrieval variant's frozen pretrained sentence encoder (--encoder), one pass of which gives the retriever its vector and the generator its token states, read by a T5 of the encoder's width (--reader-layers, --decoder-layers) over label pieces of the encoder's own vocabulary", choices=BACKBONES)
    reader_layers: int = opt(0, "sentence-encoder backbone: T5 encoder blocks (from scratch) over the frozen token states and the candidates (0: the decoder attends to them directly, the fastest)")
    decoder_layers: int = opt(2, "sentence-encoder backbone: T5 decoder blocks (from scratch)")
    decoder_heads: int = opt(6, "sentence-encoder backbone: attention heads (the encoder width must divide by it)")
    decoder_ff: int = opt(1024, "sentence-encoder backbone: feed-forward size of each block")
    decoder_init: str = opt("encoder", "sentence-encoder backbone: label-piece embeddings (tied to the output layer) start from the sentence encoder's embeddings of the same pieces ('encoder') or at random ('random')", choices=("encoder", "random"))
    generator: str = opt("auto", "serve the generator stage? auto: only where it beats the retriever stage on dev (out-of-fold, as the fusion is fitted), else the saved model serves the retriever stage alone and says so; always; never (the retriever stage alone, no generator trained)", choices=GENERATOR_GATES)
    preset: str = opt("cpu", "model shape built from scratch with a new SentencePiece tokenizer", choices=tuple(PRESETS))
    base_model: str | None = opt(None, "pretrained T5 (hub name such as t5-base, or a local directory) instead of a preset")
    lora: bool = opt(False, "train a LoRA adapter (peft) instead of all weights; needs --base-model")
    lora_r: int = opt(16, "LoRA rank")
    embedding_init: str = opt("corpus", "token embeddings of a preset: 'corpus' starts them from token-label PMI and LSA of the train data, 'random' from T5's init", choices=("corpus", "random"))
    vocab_size: int | None = opt(None, "SentencePiece vocabulary size (default: the preset's)")
    max_input_length: int = opt(128, "input tokens per document, task prefix and eos included")
    max_target_length: int = opt(64, "target tokens per document")
    label_order: str = opt("frequency", "order of labels in the target", choices=ORDERS)
    variant: str = opt("base", "base; bcl: an auxiliary multi-cluster head, loss = xent + BCL_LAMBDA * BCE; mcg: generate the cluster tokens first, then the labels with them appended to the input; retrieval: the label retriever's best candidates appended to the input, the generator's labels fused with the retriever's scores", choices=VARIANTS)
    clusters: str | None = opt(None, "label clustering from `xlgen cluster` for bcl/mcg (default: built from the train split, or the base model's own)")
    n_clusters: int | None = opt(None, "clusters when built here (default: about the square root of the label count)")
    cluster_features: str = opt("tfidf", "label features when clustering here: tfidf; sentence (embeddings of the pretrained sentence encoder --encoder); or encoder (mean-pooled states of --base-model, an xlgen model directory)", choices=("tfidf", "sentence", "encoder"))
    bcl_lambda: float = opt(1.0, "weight of the cluster BCE next to the generation loss (bcl)")
    encoder: str = opt("all-MiniLM-L6-v2", "retrieval: sentence encoder (the packaged all-MiniLM-L6-v2, a sentence-transformers directory, or a hub name); static: a model2vec static model distilled once from the packaged one (needs the distill extra; 15-25x faster embedding, for large pools at a cost in quality: docs/scale.md)")
    encoder_quantization: str = opt("float32", "retrieval: the sentence encoder's weights on the CPU (CTranslate2): float32 gives the same vectors as torch, int8 is about 1.8x faster (cosine 0.995 to float32); the saved model tags with the same", choices=ENCODER_QUANTIZATIONS)
    fine_tune_encoder: bool = opt(False, "retrieval: fine-tune the sentence encoder on (document, label text) pairs of the train data and on --encoder-answers before fitting the retriever (in-batch negatives; minutes on a CPU); the model directory then carries the fine-tuned encoder")
    encoder_answers: str | None = opt(None, "retrieval, with --fine-tune-encoder: JSON Lines of annotators' binary answers {'text', 'label', 'answer': true|false}: a yes is a training pair, a no a hard negative of the label")
    encoder_hard_negatives: bool = opt(False, "retrieval, with --fine-tune-encoder: the no answers of --encoder-answers become hard negatives (the triplet label text, a known positive, the rejected document); off, only the yes answers are learned (measured better for new labels' recall@10: see the README)")
    encoder_pairs: int = opt(2000, "retrieval, with --fine-tune-encoder: train (document, label) pairs replayed beside the answers, sampled at random (they keep what the encoder knows of the old labels; 0: the answers only)")
    encoder_epochs: float = opt(1.0, "retrieval, with --fine-tune-encoder: passes over the fine-tuning pairs")
    retriever_sources: tuple[str, ...] = opt(("knn", "label_text", "linear"), "retrieval: label sources of the retriever")
    retriever_candidates: int = opt(20, "retrieval: candidates each retriever source proposes per document (its top K)")
    candidates_in_input: int = opt(10, "retrieval: best candidates appended to the generator's input")
    fusion_features: str = opt("counts", "retrieval: features of the fusion's generator stage, fitted on dev: base (retriever logit, beam mass, generated, its rank, retrieved); counts adds the label's log train count (the default: +0.018 macro-F1 on goemotions, see the README); document adds the label's gaps to the document's best retriever logit and beam mass and the number of generated labels; counts+document both", choices=tuple(GENERATOR_FEATURE_SETS))
    label_file: str | None = opt(None, "retrieval: JSON Lines of {'label', 'description', 'examples'}: label texts the retriever matches documents against (default: the label names)")
    deficit_rate: float = opt(0.0, "positive-unlabeled simulation: fraction of each train document's labels dropped")
    data_license: str | None = opt(None, "license of the training data for the model card (a Hugging Face license id such as apache-2.0 or cc-by-sa-4.0)")
    train_limit: int | None = opt(None, "use only the first N train documents")
    dev_limit: int | None = opt(2000, "dev documents for the periodic evaluation (threshold tuning uses all)")
    epochs: float = opt(4.0, "passes over the train data")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (overrides EPOCHS)")
    batch_size: int = opt(64, "documents per step and process")
    grad_accum: int = opt(1, "gradient accumulation steps")
    lr: float = opt(1e-2, "peak learning rate: about 1e-2 with Adafactor from scratch, 1e-3 for a pretrained T5, 1e-3 / 3e-4 with AdamW")
    optimizer: str = opt("adafactor", "Adafactor scales each step by the parameter's RMS (T5's own recipe; it moves T5's std-1 embeddings as fast as the layers); AdamW does not", choices=("adafactor", "adamw"))
    embedding_lr_scale: float = opt(1.0, "learning-rate multiplier of the token embeddings of a preset (for AdamW, which moves std-1 embeddings slowly); pretrained models always use 1")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    warmup_ratio: float = opt(0.05, "share of the steps spent warming the learning rate up")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    label_smoothing: float = opt(0.0, "label smoothing of the generation loss")
    eval_every: int = opt(0, "evaluate on dev every N steps; 0 evaluates once per epoch")
    patience: int = opt(3, "stop after this many evaluations without a better dev micro-F1")
    mixed_precision: str = opt("auto", "auto: bf16 on a CUDA GPU that supports it, else no; bf16 also trains on a CPU with AMX or AVX512-BF16 (1.20x the training loop of scripts/main.sh's recipe, same test F1: benchmarks/train_precision.py); fp16 needs CUDA", choices=("auto", "no", "bf16", "fp16"))
    threads: int | None = opt(None, "CPU threads for torch (default: all cores)")
    seed: int = opt(0, "seed of everything")
    resume: bool = opt(True, "continue from OUTPUT_DIR/checkpoint when a run was interrupted")
    overwrite: bool = opt(False, "train again even if OUTPUT_DIR already holds a finished model")
    progress: bool = opt(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.lora and not self.base_model:
            raise ValueError("--lora needs --base-model: a LoRA adapter over random weights learns nothing useful")
        if not 0.0 <= self.deficit_rate < 1.0:
            raise ValueError("--deficit-rate must lie in [0, 1)")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs <= 0:
            raise ValueError("--batch-size, --grad-accum and --epochs must be positive")
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if self.max_input_length < 4 or self.max_target_length < 2:
            raise ValueError("--max-input-length must be at least 4 and --max-target-length at least 2")
        if self.threads is not None and self.threads < 1:
            raise ValueError("--threads must be positive")
        if self.variant == "base" and self.clusters:
            raise ValueError("--clusters needs --variant bcl or mcg")
        if self.retriever_candidates < 1 or self.candidates_in_input < 1:
            raise ValueError("--retriever-candidates and --candidates-in-input must be positive")
        if (self.encoder_answers or self.encoder_pairs != 2000 or self.encoder_epochs != 1.0 or self.encoder_hard_negatives) \
                and not self.fine_tune_encoder:
            raise ValueError("--encoder-answers, --encoder-hard-negatives, --encoder-pairs and --encoder-epochs need --fine-tune-encoder")
        if self.fine_tune_encoder and self.variant != "retrieval":
            raise ValueError("--fine-tune-encoder needs --variant retrieval")
        if self.fine_tune_encoder and self.encoder in STATIC_ENCODERS:
            raise ValueError("--fine-tune-encoder trains a transformer encoder; --encoder static is a distilled lookup table")
        if self.encoder_pairs < 0 or self.encoder_epochs <= 0:
            raise ValueError("--encoder-pairs must not be negative and --encoder-epochs must be positive")
        if self.bcl_lambda < 0:
            raise ValueError("--bcl-lambda must not be negative")
        if self.backbone == "sentence-encoder":
            if self.variant != "retrieval":
                raise ValueError("--backbone sentence-encoder needs --variant retrieval (its retriever holds the sentence encoder)")
            if self.base_model or self.lora:
                raise ValueError("--backbone sentence-encoder builds its generator on the sentence encoder: no --base-model, no --lora")
            if self.reader_layers < 0 or self.decoder_layers < 1 or self.decoder_heads < 1 or self.decoder_ff < 1:
                raise ValueError("--reader-layers must be >= 0; --decoder-layers, --decoder-heads and --decoder-ff >= 1")
        if self.generator != "auto" and self.variant != "retrieval":
            raise ValueError("--generator always|never needs --variant retrieval (only its fusion can serve without the generator)")
        if self.cluster_features == "encoder" and not self.clusters and self.variant != "base" and not self.base_model:
            raise ValueError("--cluster-features encoder needs --base-model (an xlgen model directory)")

    def fingerprint(self) -> str:
        """Hash of the fields that change what is trained (not where or how verbosely)."""
        d = dataclasses.asdict(self)
        for k in ("output_dir", "resume", "overwrite", "progress", "threads", "data_license", "evaluate_test"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
