"""The model card (``README.md``) of a model directory: how to use it with plain transformers.

It states what :meth:`xlgen.model.XLGenModel.predict` does, in the terms of the Hugging Face files
the directory holds: the input prefix and truncation, the ``<sep>`` separator and how to parse the
output, what the tuned threshold applies to, and a runnable snippet. ``tests/test_hf_format.py``
runs the snippet and compares it with ``xlgen predict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlgen.backbone import TEXT
from xlgen.guidance.mcg import CLUSTER_GENERATION_CONFIG
from xlgen.tokenizer import SEP, TASK_CLUSTERS, TASK_LABELS, cluster_token

GENERATION_CONFIG = "generation_config.json"

_VARIANTS = {
    "base": "generates the labels",
    "bcl": "generates the labels; trained beside an auxiliary multi-cluster head (``guidance/cluster_head.safetensors``), "
           "which plain generation does not use",
    "mcg": "first generates the document's label-cluster tokens, then the labels with those tokens appended to its input",
    "retrieval": "generates the labels from the text followed by the label retriever's best candidate labels, and "
                 "xlgen fuses them with the retriever's scores (``guidance/``: the retriever and the calibrators)",
}


def _decoding_text(cfg: Any) -> str:
    if cfg.strategy == "beam":
        return f"beam search, {cfg.num_beams} beams"
    if cfg.strategy == "sample":
        return f"sampling (temperature {cfg.temperature}, top-k {cfg.top_k or 'off'}, top-p {cfg.top_p})"
    return "greedy search"


def _best(cfg: Any) -> str:
    """What plain ``generate`` returns under ``cfg``."""
    return {"beam": "its best beam (highest log-probability per token)", "greedy": "the greedy sequence",
            "sample": "one sample"}[cfg.strategy]


def _returned(cfg: Any) -> tuple[str, str, str]:
    """``(how many sequences xlgen returns, the snippet's count expression, the weight of one)``."""
    if cfg.strategy == "beam":
        return f"all {cfg.num_beams} beams", "config.num_beams", "logprob[k].exp().item()"
    if cfg.strategy == "sample":
        return f"{cfg.num_samples} samples", str(cfg.num_samples), "1 / n"
    return "the one sequence", "1", "logprob[k].exp().item()"


def _front_matter(xm: Any) -> str:
    source = xm.settings.source
    lines = ["---", f"library_name: {'peft' if xm.settings.lora else 'transformers'}", "pipeline_tag: text2text-generation",
             "tags:", "- xlgen", "- t5", "- text-classification", "- multi-label-classification",
             "- extreme-multi-label-classification"]
    if xm.settings.lora:
        lines.append("- lora")
    if xm.data_license:
        lines.append(f"license: {xm.data_license}")
    if not source.startswith("preset:") and not Path(source).exists():  # a Hub name, not a local directory
        lines.append(f"base_model: {source}")
    return "\n".join([*lines, "---"])


def _encoder_reference(xm: Any) -> str:
    """Python source naming where plain sentence-transformers code loads the retriever's encoder from: the
    packaged all-MiniLM-L6-v2 by its hub name (the same weights), else the copy the model directory carries."""
    from xlgen.encoders.packaged import is_packaged

    if is_packaged(xm.guidance.retriever.encoder.name):
        return repr("sentence-transformers/all-MiniLM-L6-v2")
    return 'f"{model_dir}/guidance/retriever/encoder"'


def _cache_patch(xm: Any) -> str:
    """For a T5 with more decoder than encoder layers: ``generate`` with a cache that grows with the decoder
    (transformers sizes its own by the encoder's layer count, see :func:`xlgen.backends.torch_backend.decoder_cache`)."""
    config = xm.t5.config
    if config.num_decoder_layers <= config.num_layers:
        return ""
    return ("from transformers.cache_utils import DynamicCache, EncoderDecoderCache\n\n"
            f"# transformers sizes generate's cache by the encoder's {config.num_layers} layer(s); the decoder has "
            f"{config.num_decoder_layers}\n"
            "_generate = model.generate\n"
            "model.generate = lambda *a, **kw: _generate(*a, cache=EncoderDecoderCache(DynamicCache(), DynamicCache()), **kw)\n")


def _snippet(xm: Any) -> str:
    s, cfg = xm.settings, xm.decoding
    _, n_expr, weight = _returned(cfg)
    if s.lora:
        load = ("from peft import AutoPeftModelForSeq2SeqLM\n\n"
                "model = AutoPeftModelForSeq2SeqLM.from_pretrained(model_dir).eval()  # the base model, resized, with this adapter")
    else:
        load = "model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()"
    code = f'''import copy
import itertools
import json
import re

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

model_dir = "."  # this folder
tok = AutoTokenizer.from_pretrained(model_dir)
{load}
config = GenerationConfig.from_pretrained(model_dir)  # {_decoding_text(cfg)}, at most {cfg.max_new_tokens} new tokens
label_space = set(json.load(open(f"{{model_dir}}/labels.json"))["labels"])
texts = ["Thank you so much, this made my day!", "I can't believe they did that."]


def parse(ids):
    """Generated ids -> labels: up to </s>, without padding, split at {SEP}, stripped, each once."""
    ids = [i for i in itertools.takewhile(lambda i: i != tok.eos_token_id, ids) if i != tok.pad_token_id]
    return list(dict.fromkeys(x.strip() for x in tok.decode(ids).split("{SEP}") if x.strip()))


def label_scores(inputs, config, n):
    """Per text, every generated label with its score: the probability mass of the n returned
    sequences that contain it (for sampling, the share of samples), at most 1."""
    config = copy.deepcopy(config)
    config.update(num_return_sequences=n, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        out = model.generate(**inputs, generation_config=config)
        logprob = model.compute_transition_scores(out.sequences, out.scores, getattr(out, "beam_indices", None),
                                                  normalize_logits=True).sum(dim=1)
    rows = []
    for i in range(len(out.sequences) // n):
        scores = {{}}
        for k in range(i * n, (i + 1) * n):
            for label in parse(out.sequences[k].tolist()):
                scores[label] = min(1.0, scores.get(label, 0.0) + {weight})
        rows.append(dict(sorted(scores.items(), key=lambda kv: -kv[1])))
    return rows

'''
    if s.variant == "mcg":
        g = xm.guidance
        _, c_expr, c_weight = _returned(g.decoding)
        code += f'''
# first stage: "{TASK_CLUSTERS}" + text -> cluster tokens, each scored like a label
cluster_config = GenerationConfig.from_pretrained(model_dir, "{CLUSTER_GENERATION_CONFIG}")
stage1 = tok(["{TASK_CLUSTERS}" + t for t in texts], truncation=True, padding=True, return_tensors="pt")
cluster_rows = label_scores(stage1, cluster_config, {c_expr.replace("config.", "cluster_config.")})
rows = []
for text, scores in zip(texts, cluster_rows):
    found = [(re.fullmatch(r"<c(\\d+)>", c), v) for c, v in scores.items()]
    ranked = [(int(m.group(1)), v) for m, v in found if m and int(m.group(1)) < {g.clusters.n_clusters}]
    clusters = sorted({{c for c, v in ranked if v >= {g.threshold!r}}} or {{c for c, _ in ranked[:1]}})
    # second stage: "{TASK_LABELS}" + text (cut to fit) + the cluster tokens + </s>
    budget = {s.max_input_length} - 2 - len(clusters)
    ids = tok(text, add_special_tokens=False)["input_ids"][:budget]
    suffix = tok.convert_tokens_to_ids([f"<c{{c}}>" for c in clusters])
    rows.append([tok.convert_tokens_to_ids("{TASK_LABELS}")] + ids + suffix + [tok.eos_token_id])
inputs = tok.pad({{"input_ids": rows}}, return_tensors="pt")
'''
    elif getattr(s, "backbone", "t5") == "sentence-encoder":
        g = xm.guidance
        code += f'''
# the text is read by the sentence encoder the label retriever uses: its token states are the T5's input at
# the "<text>" positions (xlgen runs it on CTranslate2, {g.retriever.encoder.numerics}: scores agree to rounding)
from sentence_transformers import SentenceTransformer
{_cache_patch(xm)}
encoder = SentenceTransformer({_encoder_reference(xm)}, device="cpu")
text_id, width = tok.convert_tokens_to_ids("{TEXT}"), model.config.d_model
states = [s[: {s.max_input_length - 1}] for s in encoder.encode(texts, output_value="token_embeddings", convert_to_tensor=True)]
ids = torch.full((len(texts), max(len(x) for x in states) + 1), tok.pad_token_id)
for i, x in enumerate(states):
    ids[i, : len(x)], ids[i, len(x)] = text_id, tok.eos_token_id
mask = (ids != tok.pad_token_id).long()
with torch.no_grad():
    embeds = model.get_input_embeddings()(ids)  # (texts, len, width)
    for i, x in enumerate(states):
        embeds[i, : len(x)] = x
inputs = {{"inputs_embeds": embeds, "attention_mask": mask}}
with torch.no_grad():
    best = model.generate(**inputs, generation_config=config)  # one sequence per text
print("generated:", [parse(row.tolist()) for row in best])
'''
    else:
        code += f'''
inputs = tok(["{TASK_LABELS}" + t for t in texts], truncation=True, padding=True, return_tensors="pt")  # {s.max_input_length} tokens at most
with torch.no_grad():
    best = model.generate(**inputs, generation_config=config)  # one sequence per text
print("generated:", [parse(row.tolist()) for row in best])
'''
    code += f'''
# what `xlgen predict` returns: the labels scoring at least the tuned threshold (at least min_labels of them)
threshold, min_labels, keep_new_labels = {xm.threshold!r}, {cfg.min_labels}, {cfg.keep_new_labels}
for text, scores in zip(texts, label_scores(inputs, config, {n_expr})):
    ranked = [(x, v) for x, v in scores.items() if keep_new_labels or x in label_space]
    kept = [(x, v) for x, v in ranked if v >= threshold]
    kept = kept if len(kept) >= min_labels else ranked[:min_labels]
    labels = [{{"label": x, "score": round(v, 4), "new": x not in label_space}} for x, v in kept]
    print(json.dumps({{"text": text, "labels": labels}}, ensure_ascii=False))  # as `xlgen predict` prints it
'''
    return code


def model_card(xm: Any) -> str:
    """The ``README.md`` of model ``xm``'s directory."""
    s, cfg = xm.settings, xm.decoding
    returned, _, _ = _returned(cfg)
    if s.source.startswith("preset:"):
        source = "a T5 built from scratch (preset " + s.source.split(":", 1)[1] + ")"
    elif s.source.startswith("encoder:"):
        source = ("a T5 built from scratch over the frozen sentence encoder `" + s.source.split(":", 1)[1] + "` (its label-piece "
                  "embeddings started from the encoder's)")
    else:
        source = f"`{s.source}`"
    lora = " as a LoRA adapter (peft)" if s.lora else ""
    metrics = {k: v for k, v in xm.metrics.items() if k.endswith(("micro_f1", "macro_f1", "p_at_1"))}
    lines = [
        _front_matter(xm), "",
        "# xlgen label generator", "",
        f"A T5 encoder-decoder that writes a document's labels as text (generative extreme multi-label "
        f"classification). Variant `{s.variant}`: it {_VARIANTS[s.variant]}. Trained from {source}{lora}; "
        f"{len(xm.label_space)} labels.",
    ]
    if metrics:
        lines += ["", "| metric | value |", "|---|---|", *(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))]
    gate = getattr(xm, "generator_gate", None)
    if gate is not None:
        lines += ["", "## Generator stage", "",
                  ("Served: `xlgen predict` fuses the generator's labels with the retriever's. " if gate.serve else
                   "Not served: `xlgen predict` tags with the retriever stage alone (the fusion's calibrated retriever "
                   "scores; the generator below is not run). ") + f"Decided at training (`--generator {gate.mode}`): {gate.reason}."]
    lines += ["", "## Input", ""]
    if s.variant == "mcg":
        g = xm.guidance
        lines.append(
            f"Two stages. First `{TASK_CLUSTERS}` followed by the text, generated with `{CLUSTER_GENERATION_CONFIG}` into "
            f"cluster tokens (`{cluster_token(0)}` ... `{cluster_token(g.clusters.n_clusters - 1)}`, joined by `{SEP}`); "
            f"each cluster is scored like a label below and kept at a score of at least {g.threshold:.4g} (at "
            f"least the best one). Then `{TASK_LABELS}`, the text, the kept cluster tokens in increasing order and `</s>`, "
            f"the text cut so that the whole input is at most {s.max_input_length} tokens.")
    elif getattr(s, "backbone", "t5") == "sentence-encoder":
        g = xm.guidance
        lines.append(
            f"Not token ids: the document is read by the label retriever's frozen sentence encoder, "
            f"`{g.retriever.encoder.name}`, whose token states (special tokens included, at most {s.max_input_length - 1}) "
            f"are the T5 encoder's `inputs_embeds` at positions that hold the id of `{TEXT}`; then the retriever's "
            f"{g.k_input} best candidate labels, each after a `{SEP}` (at most {g.max_suffix_tokens} tokens of them), then "
            f"`</s>`, embedded as usual. Labels are written in the sentence encoder's own WordPiece pieces (the tokenizer "
            f"here holds only the pieces the labels use). The same encoder pass gives the retriever its pooled vector, so "
            f"xlgen reads each document once. The candidates come from the retriever in `guidance/retriever/`, which "
            f"plain transformers code cannot run: the snippet below appends none and shows the bare generator, weaker "
            f"than the model. The labels `xlgen predict` returns are the fused scores of the generator and the retriever "
            f"(`guidance/fusion.json`), and the threshold applies to those.")
    elif s.variant == "retrieval":
        g = xm.guidance
        lines.append(
            f"`{TASK_LABELS}`, the text, then the label retriever's {g.k_input} best candidate labels for it, each after a "
            f"`{SEP}` (at most {g.max_suffix_tokens} tokens of them), then `</s>`, the text cut so that the whole input is at "
            f"most {s.max_input_length} tokens. The candidates come from the retriever in `guidance/retriever/` (a "
            f"sentence encoder, `{g.retriever.encoder.name}`, with kNN votes, label-text similarity and a linear ranker), "
            f"which plain transformers code cannot run: the snippet below appends no candidates and shows the bare "
            f"generator, weaker than the model. The labels `xlgen predict` returns are the fused scores of the generator "
            f"and the retriever (`guidance/fusion.json`), and the threshold applies to those.")
    else:
        lines.append(
            f"The token `{TASK_LABELS}` followed by the text: `tok(\"{TASK_LABELS}\" + text, truncation=True)` gives "
            f"`{TASK_LABELS}`, the text's tokens and `</s>`, at most {s.max_input_length} tokens (the tokenizer's "
            f"`model_max_length`).")
    lines += [
        "", "## Output", "",
        f"The labels joined by `{SEP}`, then `</s>`. Drop the padding, cut at `</s>`, decode, split at `{SEP}` and strip "
        f"each part; skip empty and repeated parts. Decode with the `{SEP}` token kept (the snippet filters ids instead of "
        f"using `skip_special_tokens`). A generated label can lie outside the label space: `labels.json` lists the "
        f"training labels (`labels`, most frequent first, with their training `counts`); "
        + ("xlgen keeps such labels, flagged `new`." if cfg.keep_new_labels else "xlgen drops such labels."),
        "", "## Decoding, scores and the threshold", "",
        f"`generation_config.json` holds the decoding defaults: {_decoding_text(cfg)}, at most {cfg.max_new_tokens} new "
        f"tokens, decoder start `<pad>`. Plain `model.generate(**inputs)` runs that search and returns {_best(cfg)}"
        + (" (pass `generation_config=GenerationConfig.from_pretrained(model_dir)`: a peft model otherwise generates "
           "with its base model's configuration)" if s.lora else "")
        + f". `xlgen predict` returns {returned} instead and scores every label by the "
        f"probability mass of the returned sequences that contain it"
        + (" (the share of samples that contain it)" if cfg.strategy == "sample" else " (summed sequence probabilities, at most 1)")
        + f". The threshold {xm.threshold:.4g} (tuned on the dev split for micro-F1, in `xlgen.json`) applies to those "
        f"scores, not to the best sequence: a document gets the labels scoring at least the threshold"
        + {0: ".", 1: ", and at least its best-scored one."}.get(cfg.min_labels, f", and at least its {cfg.min_labels} best-scored ones."),
        "", "## Use with transformers", "",
        "```python", _snippet(xm).rstrip(), "```",
        "", "## Use with xlgen", "",
        "```bash", 'xlgen predict --model . "Thank you so much, this made my day!"', "```",
        "", "`xlgen.json` holds the settings, the decoding defaults and the thresholds; `xlgen serve --model .` serves the "
        "model over HTTP.", "",
    ]
    return "\n".join(lines)
