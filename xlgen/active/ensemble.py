"""Ensemble decoding: several decoding settings (members) over one encoder pass per document.

The default members (:data:`MEMBER_SETS` ``fast``) are beam search (5 beams) and two members of one
top-k/top-p sample each; the ``wide`` set keeps two sampling members of 5 samples each, one top-k/top-p
and one at temperature 0.8. Optional MC-dropout members repeat the first member ``mc_dropout`` times
with dropout switched on in the decoder. Every member that takes encoder states reads them from one
shared cache, so each document is encoded once for all of them however many there are (MC dropout
therefore perturbs the decoder only); a member on CTranslate2 encodes by itself (see
:func:`decode_ensemble`). Consecutive sampling members that differ only in their sample count and
seed draw their samples in one decoding call, one encoder pass and one batched loop for all of them,
and share them out (:func:`sample_groups`).

Each member predicts a label set (its label scores cut at the model's threshold); the members are
combined by ``union``, ``intersection`` or ``vote`` (labels predicted by at least ``min_votes`` of
the members), and every label keeps its vote fraction, the share of members that predicted it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from xlgen.backends import Backend, pick
from xlgen.decoding import Candidate, DecodingConfig
from xlgen.model import XLGenModel

COMBINE = ("union", "intersection", "vote")


def default_members() -> tuple[DecodingConfig, ...]:
    """The ``fast`` set: beam-5 and two members of one top-k/top-p sample each, drawn in one call."""
    return MEMBER_SETS["fast"]


MEMBER_SETS: dict[str, tuple[DecodingConfig, ...]] = {
    # two one-sample members with the same settings: one sampling call of 2 samples (sample_groups).
    # Measured on the cpu preset, CTranslate2 int8, one thread (benchmarks/inference.py): see the README
    "fast": (
        DecodingConfig(strategy="beam", num_beams=5),
        DecodingConfig(strategy="sample", num_samples=1, top_k=20, top_p=0.9, seed=1),
        DecodingConfig(strategy="sample", num_samples=1, top_k=20, top_p=0.9, seed=2),
    ),
    # two members of 5 samples each with different settings: two sampling calls of 5 samples
    "wide": (
        DecodingConfig(strategy="beam", num_beams=5),
        DecodingConfig(strategy="sample", num_samples=5, top_k=20, top_p=0.9, seed=1),
        DecodingConfig(strategy="sample", num_samples=5, temperature=0.8, seed=2),
    ),
}
"""Named member sets: ``fast`` (the default) and ``wide``."""

MEMBER_SETS_HELP = ("ensemble members of vote, variance and beal_adapted: fast (beam-5 and two one-sample members drawn in one "
                    "call, about two beam passes on CTranslate2) or wide (beam-5 and two members of 5 samples, about three and a half)")
"""The command lines' help on :data:`MEMBER_SETS`."""


def sample_groups(members: Sequence[DecodingConfig]) -> list[list[int]]:
    """``members``' indices in groups decoded by one call each: consecutive sampling members whose
    settings differ only in ``num_samples`` and ``seed`` form one group (its call draws every
    member's samples with the first member's seed); any other member is a group of its own."""
    groups: list[list[int]] = []
    for k, m in enumerate(members):
        if groups and m.strategy == "sample" and m.top_k != 1:
            first = members[groups[-1][0]]
            if first.strategy == "sample" and replace(first, num_samples=1, seed=0) == replace(m, num_samples=1, seed=0):
                groups[-1].append(k)
                continue
        groups.append([k])
    return groups


def share_out(cands: Sequence[Candidate], sizes: Sequence[int], rng: np.random.Generator) -> list[list[Candidate]]:
    """Splits one document's samples (best first) into consecutive shares of ``sizes``, each best
    first, after a random permutation (from ``rng``): the shares are then independent draws, as
    separate calls would give, where slicing the sorted list would hand the likeliest to the first."""
    perm = rng.permutation(len(cands))
    out, start = [], 0
    for n in sizes:
        share = [cands[i] for i in sorted(perm[start:start + n].tolist())]  # sorted indices: best first again
        out.append(share)
        start += n
    return out


@dataclass(frozen=True)
class EnsembleConfig:
    """The ensemble's members and how they are combined.

    Attributes:
        members: Decoding settings, one per member; the first is the reference member (its beams
            feed the beam-based acquisition functions).
        combine: ``union``, ``intersection`` or ``vote``.
        min_votes: For ``vote``: the share of members that must predict a label.
        mc_dropout: Extra members: this many stochastic passes of the first member with dropout on.
        mc_passes: T of BEAL (the ``beal`` strategy): passes of the whole network, encoder included,
            with dropout on, each decoding like the first member (see :func:`mc_passes`).
        max_new_tokens: Overrides every member's ``max_new_tokens`` when set.
        batch_size: Documents per forward pass, for every member.
    """

    members: tuple[DecodingConfig, ...] = field(default_factory=default_members)
    combine: str = "vote"
    min_votes: float = 0.5
    mc_dropout: int = 0
    mc_passes: int = 10
    max_new_tokens: int | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        if self.combine not in COMBINE:
            raise ValueError(f"unknown combination {self.combine!r}; choose one of {', '.join(COMBINE)}")
        if not 0 < self.min_votes <= 1:
            raise ValueError("min_votes must lie in (0, 1]")
        if self.mc_dropout < 0 or self.batch_size < 1 or self.mc_passes < 1:
            raise ValueError("mc_dropout must not be negative; batch_size and mc_passes must be positive")

    def member_configs(self) -> list[DecodingConfig]:
        """Every member's decoding settings, MC-dropout passes last (each with its own seed)."""
        base = [replace(m, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens or m.max_new_tokens) for m in self.members]
        mc = [replace(base[0], seed=base[0].seed + 1000 + t) for t in range(self.mc_dropout)]
        return base + mc


@dataclass
class EnsembleOutput:
    """What an ensemble produced for ``n_docs`` documents and ``n_members`` members.

    Attributes:
        candidates: ``[member][doc]`` -> that member's candidates, best first.
        member_labels: ``[member][doc]`` -> the labels that member predicts, with their scores.
        votes: ``[doc]`` -> every label any member predicted, with its vote fraction.
        labels: ``[doc]`` -> the combined labels with their vote fractions, most voted first.
        embeddings: Mean-pooled encoder states, ``(n_docs, d_model)``; None when not asked for.
    """

    candidates: list[list[list[Candidate]]]
    member_labels: list[list[dict[str, float]]]
    votes: list[dict[str, float]]
    labels: list[list[tuple[str, float]]]
    embeddings: np.ndarray | None

    @property
    def n_members(self) -> int:
        return len(self.candidates)


def combine_votes(member_sets: Sequence[Iterable[str]], how: str, min_votes: float = 0.5) -> list[tuple[str, float]]:
    """Combines the label sets of the members of one document.

    Args:
        member_sets: One label collection per member.
        how: ``union`` (any member), ``intersection`` (every member) or ``vote`` (at least
            ``min_votes`` of the members).
        min_votes: Share of members needed by ``vote``.

    Returns:
        ``(label, vote fraction)`` pairs, most voted first.
    """
    if how not in COMBINE:
        raise ValueError(f"unknown combination {how!r}")
    n = len(member_sets)
    counts: dict[str, int] = {}
    for labels in member_sets:
        for x in dict.fromkeys(labels):
            counts[x] = counts.get(x, 0) + 1
    need = {"union": 1, "intersection": n, "vote": min_votes * n}[how]
    kept = [(x, c / n) for x, c in counts.items() if c >= need - 1e-9]
    return sorted(kept, key=lambda kv: -kv[1])


def encoder_embeddings(cache: dict[int, torch.Tensor], n_docs: int) -> np.ndarray:
    """Mean of each document's cached encoder states over its real tokens: ``(n_docs, d_model)``."""
    return torch.stack([cache[i].float().mean(dim=0) for i in range(n_docs)]).numpy()  # (n_docs, d_model)


def member_backends(model: XLGenModel, members: Sequence[DecodingConfig]) -> list[Backend | None]:
    """The backend decoding each of ``members`` (None: torch), dropout off: each member's fastest
    (:func:`xlgen.backends.pick`), sampling members included.

    A CTranslate2 member encodes by itself and computes the cross-attention keys and values of every
    sample anew, where ONNX Runtime reads one shared encoder pass; decoding in chunks of documents
    (:data:`xlgen.backends.ct2_backend.CHUNK_DOCS`), CTranslate2 is still the faster. Measured on the
    cpu preset, one thread, batch 32 (``benchmarks/inference.py --unchunked``): the ensemble all on
    CTranslate2 ran at 293.7 documents/s on GoEmotions' 21-token inputs against 222.3 with its sampling
    members on ONNX Runtime, and at 81.9 against 82.2 on Reuters' 112-token inputs.
    """
    return [pick(model.backend, model.model, m) for m in members]


def decode_ensemble(
    model: XLGenModel, texts: Sequence[str], cfg: EnsembleConfig | None = None, threshold: float | None = None,
    embeddings: bool = True,
) -> EnsembleOutput:
    """Runs every member over ``texts``, encoding each document at most once outside the backends.

    The members run on :func:`member_backends`, one call per group of :func:`sample_groups` (the
    samples of a group's members are drawn together and shared out at random). The encoder states
    are cached, and shared by every member, only when something reads them: the embeddings, a member on a backend that takes encoder
    states (torch, ONNX Runtime), or the MC-dropout members. Those members run first, so that the
    cache is filled by their own encoder and a backend that encodes by itself (CTranslate2) finds it
    full; with every member on CTranslate2 and no embeddings asked for, nothing else encodes.

    Args:
        model: The model.
        texts: Documents.
        cfg: The ensemble (default: :class:`EnsembleConfig`'s defaults).
        threshold: Score threshold of each member's label set (default: the model's tuned one).
        embeddings: Return the mean-pooled encoder states (``EnsembleOutput.embeddings``); False
            leaves it None and spares the encoder pass that only they would need.
    """
    cfg = cfg or EnsembleConfig()
    thr = model.threshold if threshold is None else threshold
    inputs = model.encode_inputs(texts)
    members = cfg.member_configs()
    n_base = len(cfg.members)
    model.model.eval()
    base_groups = sample_groups(members[:n_base])
    backends = member_backends(model, [members[g[0]] for g in base_groups])
    groups = base_groups + [[k] for k in range(n_base, len(members))]  # the MC-dropout members, one call each
    reads_states = [b is None or b.needs_states for b in backends]
    cache: dict[int, torch.Tensor] | None = {} if embeddings or cfg.mc_dropout or any(reads_states) else None
    # deterministic groups first, in eval mode, so that the cached encoder states are too; those
    # reading encoder states before those encoding by themselves (the cache gets filled once, by the former)
    order = sorted(range(len(base_groups)), key=lambda g: not reads_states[g]) + list(range(len(base_groups), len(groups)))
    candidates: list[list[list[Candidate]]] = [[] for _ in members]
    member_labels: list[list[dict[str, float]]] = [[] for _ in members]
    try:
        for g in order:
            group = groups[g]
            gcfg = members[group[0]]
            if len(group) > 1:  # one call draws the samples of every member of the group
                gcfg = replace(gcfg, num_samples=sum(members[k].num_samples for k in group))
            model.model.train(group[0] >= n_base)
            got = model.candidates(inputs, gcfg, encoder_cache=cache)  # on member_backends' choice (torch in train mode)
            if len(group) == 1:
                candidates[group[0]] = got
            else:
                rng = np.random.default_rng(gcfg.seed)
                shares = [share_out(c, [members[k].num_samples for k in group], rng) for c in got]
                for j, k in enumerate(group):
                    candidates[k] = [s[j] for s in shares]
            for k in group:
                preds = [model.to_prediction(c, members[k], thr) for c in candidates[k]]
                member_labels[k] = [dict(zip(p.labels, p.scores, strict=True)) for p in preds]
    finally:
        model.model.eval()
    votes, combined = [], []
    for d in range(len(texts)):
        sets = [member_labels[m][d] for m in range(len(members))]
        votes.append(dict(combine_votes(sets, "union")))
        combined.append(combine_votes(sets, cfg.combine, cfg.min_votes))
    emb = None
    if embeddings:
        emb = encoder_embeddings(cache or {}, len(texts)) if texts else np.zeros((0, model.t5.config.d_model), dtype=np.float32)
    return EnsembleOutput(candidates, member_labels, votes, combined, emb)


def mc_passes(model: XLGenModel, texts: Sequence[str], cfg: EnsembleConfig | None = None, seed: int = 0) -> list[list[dict[str, float]]]:
    """``cfg.mc_passes`` stochastic passes of the whole network (dropout on in the encoder and the
    decoder, no encoder state shared between passes), each decoding like the first member: ``[pass][doc]``
    -> every proposed label's probability, uncut (fused with the guidance's scores where the model fuses).
    The guidance plans once (retrieval candidates do not depend on dropout). Runs on torch: the exported
    backends have no dropout.
    """
    cfg = cfg or EnsembleConfig()
    member = cfg.member_configs()[0]
    texts = list(texts)
    plan = model.plan(texts)
    out: list[list[dict[str, float]]] = []
    state = torch.random.get_rng_state()
    try:
        for t in range(cfg.mc_passes):
            # decoding seeds torch with the member's seed: each pass gets its own, so its own dropout masks
            run = replace(member, seed=member.seed + 1_000_003 * seed + 7_919 * (t + 1))
            out.append([dict(p.all_scores) for p in model.predict(texts, run, threshold=0.0, plan=plan, dropout=True)])
    finally:
        model.model.eval()
        torch.random.set_rng_state(state)
    return out
