"""Acquisition functions: how uncertain the model is about each pool document.

Every function is a small class with one verb, ``score(outputs) -> np.ndarray  # (n_docs,)``,
where a higher score means "annotate this first". They are chosen by name from :data:`STRATEGIES`
(``get_strategy("vote")``); ranking, top-b and diversity live once, in :mod:`xlgen.active.selection`.

Each class says what it ``needs`` of the model, so that the caller decodes only as much as that:
``none`` (text only), ``beams`` (the reference beam search), ``clusters`` (the beams and the
cluster probabilities of a ``bcl`` or ``mcg`` model), ``ensemble`` (every member), ``passes`` (T
passes with dropout on) or ``surprisal`` (the beams and the generator's token losses on the best one).
A strategy that selects a batch as a whole (``picks_batch``) also has ``pick``.

Log-probabilities are length-normalised here (sum over tokens / number of tokens), never taken
from the generation library's beam scores, which apply a length penalty.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xlgen.decoding import Candidate

NEEDS = ("none", "beams", "clusters", "ensemble", "passes", "surprisal")
"""What a strategy needs decoded, cheapest first; each of the first four also serves the ones before it
(the ensemble's first member is the reference beam search); ``passes`` (T stochastic passes of the
whole network) serves only itself; ``surprisal`` (the reference beam search and the teacher-forced token
losses of its best sequence, no cluster probabilities) serves itself, ``beams`` and ``none``
(see :func:`serves`)."""


def serves(have: str, need: str) -> bool:
    """Whether outputs decoded for the need ``have`` hold everything a strategy of need ``need`` reads."""
    chain = NEEDS[:4]
    if have == need:
        return True
    if have in chain and need in chain:
        return chain.index(have) > chain.index(need)
    return have == "surprisal" and need in ("none", "beams")


@dataclass
class PoolOutputs:
    """What the acquisition functions read about ``n_docs`` pool documents.

    Attributes:
        texts: The documents.
        n_pieces: Sub-word pieces per document (the model's tokenizer), ``(n_docs,)``.
        beams: ``[doc]`` -> the reference member's beams (with exact, unnormalised log-probs).
        members: ``[member][doc]`` -> the labels that member predicts, with their scores.
        passes: ``[pass][doc]`` -> every label's probability in that pass (uncut: the model's scores,
            fused where the model fuses), for BEAL; one deterministic pass (the reference beam
            search) when the strategy needs ``beams``, T passes with dropout on when it needs ``passes``.
        embeddings: Document vectors ``(n_docs, dim)`` (the pretrained sentence encoder's for a
            retrieval model, else the T5 encoder's mean states), for diversity, Core-Set and DAL.
        labelled_embeddings: The same vectors of the documents labelled so far ``(n_labelled, dim)``,
            for the strategies that compare the pool with them (``uses_labelled``).
        labelled_labels: The label sets of the documents labelled so far (CVIRS).
        cluster_probs: Probability of each label cluster ``(n_docs, n_clusters)`` (``bcl``: its
            head; ``mcg``: the beam mass of its first stage).
        surprisal: The generator's token losses on its own best sequence ``(n_docs, max_new_tokens)``:
            per target position the teacher-forced negative log-likelihood, 0 after the sequence's
            end (see :class:`ALPS`).
    """

    texts: list[str]
    n_pieces: np.ndarray | None = None
    beams: list[list[Candidate]] | None = None
    members: list[list[dict[str, float]]] | None = None
    passes: list[list[dict[str, float]]] | None = None
    embeddings: np.ndarray | None = None
    labelled_embeddings: np.ndarray | None = None
    labelled_labels: list[set[str]] | None = None
    cluster_probs: np.ndarray | None = None
    surprisal: np.ndarray | None = None

    @property
    def n_docs(self) -> int:
        return len(self.texts)

    def require(self, what: str) -> None:
        missing = {"n_pieces": self.n_pieces is None, "beams": self.beams is None, "members": self.members is None,
                   "passes": self.passes is None, "embeddings": self.embeddings is None,
                   "labelled_embeddings": self.labelled_embeddings is None,
                   "cluster_probs": self.cluster_probs is None, "surprisal": self.surprisal is None}
        if missing.get(what, False):
            raise ValueError(f"this acquisition function needs {what!r}, which the outputs lack")


class Strategy:
    """An acquisition function: ``score(outputs)`` -> one score per document, higher first.

    Attributes:
        name: Registry name.
        needs: What must be decoded (one of :data:`NEEDS`).
        uses_embeddings: Reads document vectors of the pool (``outputs.embeddings``).
        uses_labelled: Reads the labelled documents: their vectors too when ``uses_embeddings``
            (``outputs.labelled_embeddings``), and their label sets (``outputs.labelled_labels``).
        picks_batch: Selects a batch as a whole (:meth:`pick`) rather than by its scores, so it needs
            the whole candidate pool at once.
        seed: Seeds whatever the strategy draws at random (random scores, K-means).
    """

    name = ""
    needs = "ensemble"
    uses_embeddings = False
    uses_labelled = False
    picks_batch = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        raise NotImplementedError

    def pick(self, outputs: PoolOutputs, candidates: np.ndarray, b: int) -> np.ndarray | None:
        """A batch of ``b`` among ``candidates`` (pool indices, best score first) when the strategy selects
        a batch as a whole (``picks_batch``: Core-Set's k-center greedy, ALPS's K-means); None leaves it to the scores."""
        return None


class RandomScore(Strategy):
    """Random sampling: ``s(x) ~ U(0, 1)``, seeded, so a pool is ranked in a random order."""

    name, needs = "random", "none"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        return np.random.default_rng(self.seed).random(outputs.n_docs)  # (n_docs,)


class SubwordRatio(Strategy):
    """Sub-word pieces per word: ``s(x) = n_pieces(x) / n_words(x)``.

    Documents the tokenizer splits finely hold rare words, which the model knows least; needs no
    model. The pieces are those of the pretrained WordPiece vocabulary of the packaged sentence
    encoder (see :func:`xlgen.encoders.packaged.wordpiece_counts`), else the model's own tokenizer.
    """

    name, needs = "subword", "none"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("n_pieces")
        words = np.array([max(len(t.split()), 1) for t in outputs.texts], dtype=float)
        return np.asarray(outputs.n_pieces, dtype=float) / words  # (n_docs,)


def _sorted_norm_logprobs(beams: Sequence[Candidate]) -> np.ndarray:
    """Length-normalised log-probabilities ``log p(y) / |y|`` of the beams, best first."""
    return np.sort(np.array([c.logprob / max(c.n_tokens, 1) for c in beams], dtype=float))[::-1]


class BeamMargin(Strategy):
    """Margin between the two best beams: ``s(x) = -(l_1 - l_2)``, with ``l_i = log p(y_i | x) / |y_i|``.

    A small gap between the best and the second-best length-normalised sequence means the model
    hesitates; a document with a single beam gets ``-inf`` (no evidence of doubt).
    """

    name, needs = "margin", "beams"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("beams")
        out = np.full(outputs.n_docs, -np.inf)
        for i, beams in enumerate(outputs.beams or []):
            lp = _sorted_norm_logprobs(beams)
            if len(lp) >= 2:
                out[i] = -(lp[0] - lp[1])
        return out  # (n_docs,)


class NBestEntropy(Strategy):
    """Entropy of the N-best list: ``s(x) = -sum_i p_i log p_i`` with ``p_i = softmax(l)_i`` over the
    beams' length-normalised log-probabilities ``l_i = log p(y_i | x) / |y_i|``."""

    name, needs = "entropy", "beams"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("beams")
        out = np.zeros(outputs.n_docs)
        for i, beams in enumerate(outputs.beams or []):
            lp = _sorted_norm_logprobs(beams)
            if len(lp) == 0:
                continue
            p = np.exp(lp - lp.max())
            p /= p.sum()
            out[i] = float(-(p * np.log(np.clip(p, 1e-12, None))).sum())
        return out  # (n_docs,)


def _bernoulli_entropy(p: np.ndarray) -> np.ndarray:
    """``H(p) = -p log p - (1 - p) log(1 - p)`` elementwise, ``p`` clipped to [1e-12, 1 - 1e-12]."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


class ClusterEntropy(Strategy):
    """Cluster uncertainty of a ``bcl`` / ``mcg`` model: ``s(x) = sum_c H(p_c)``,
    ``H(p) = -p log p - (1 - p) log(1 - p)``, over the label clusters ``c`` with probability ``p_c``.

    A document whose topic regions the model cannot place (clusters near 0.5) comes first; the sum,
    not the mean, so that a document torn between several regions outranks one torn over one.
    """

    name, needs = "cluster", "clusters"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("cluster_probs")
        return _bernoulli_entropy(np.asarray(outputs.cluster_probs, dtype=float)).sum(axis=1)  # (n_docs, n_clusters) -> (n_docs,)


def vote_fractions(members: Sequence[Sequence[dict[str, float]]], doc: int) -> np.ndarray:
    """Vote fraction ``v_l`` of every label any member predicts for document ``doc``: ``(n_labels,)``."""
    counts: dict[str, int] = {}
    for m in members:
        for label in m[doc]:
            counts[label] = counts.get(label, 0) + 1
    return np.array(list(counts.values()), dtype=float) / max(len(members), 1)


class VoteDisagreement(Strategy):
    """Label-vote disagreement: ``s(x) = mean_l H(v_l)``, ``H(v) = -v log v - (1 - v) log(1 - v)``,
    over the labels ``l`` any member predicts, ``v_l`` being the share of members predicting ``l``.

    Zero when every member predicts the same set; highest when each label splits the members evenly.
    """

    name, needs = "vote", "ensemble"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("members")
        out = np.zeros(outputs.n_docs)
        for i in range(outputs.n_docs):
            v = vote_fractions(outputs.members or [], i)
            if v.size:
                out[i] = float(_bernoulli_entropy(v).mean())
        return out  # (n_docs,)


def jaccard(a: set[str], b: set[str]) -> float:
    """``|a & b| / |a | b|``; two empty sets agree fully (1)."""
    return len(a & b) / len(a | b) if a | b else 1.0


class LabelSetVariance(Strategy):
    """Label-set variance across members: ``s(x) = 1 - mean_{m < m'} J(Y_m, Y_m')``, ``J`` the Jaccard
    similarity of two members' label sets (the label-set analogue of BLEU variance)."""

    name, needs = "variance", "ensemble"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("members")
        members = outputs.members or []
        out = np.zeros(outputs.n_docs)
        for i in range(outputs.n_docs):
            sets = [set(m[i]) for m in members]
            pairs = list(itertools.combinations(sets, 2))
            if pairs:
                out[i] = 1.0 - float(np.mean([jaccard(a, b) for a, b in pairs]))
        return out  # (n_docs,)


class ExpectedConfidence(Strategy):
    """BEAL expected confidence adapted to generation (``beal_adapted``; :class:`BEAL` is the paper's), lowest first:
    ``s(x) = -(1/M) sum_m sum_r R(y_{m,r}) / log2(r + 1)``, ``R(y) = 2^y - 1``,
    where member ``m``'s predicted labels are ranked ``r = 1, 2, ...`` by their score ``y`` in [0, 1].

    A document whose members predict few, confidently scored labels is confident; the negation puts
    the least confident first.
    """

    name, needs = "beal_adapted", "ensemble"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("members")
        members = outputs.members or []
        out = np.zeros(outputs.n_docs)
        for i in range(outputs.n_docs):
            per_member = []
            for m in members:
                y = np.sort(np.clip(np.array(list(m[i].values()), dtype=float), 0.0, 1.0))[::-1]
                ranks = np.arange(1, len(y) + 1)
                per_member.append(float(((2.0**y - 1.0) / np.log2(ranks + 1)).sum()))
            out[i] = -float(np.mean(per_member)) if per_member else 0.0
        return out  # (n_docs,)


def expected_confidence(passes: Sequence[Sequence[dict[str, float]]], n_docs: int) -> np.ndarray:
    """BEAL's expected confidence per document, as the BEAL paper defines it: with relevance ``R(y) = 2^y - 1`` of a label's
    probability ``y``, one ranking ``pi`` of *all* the document's labels by their mean relevance over
    the passes, and per pass ``conf_t = sum_j R(y_tj) / pi(j)`` (a reciprocal-rank discount), the
    expectation ``(1/T) sum_t conf_t``. Labels a pass does not propose have ``y = 0``, so ``R = 0``.

    Returns:
        ``(n_docs,)`` expected confidences (0 for a document no pass labelled).
    """
    out = np.zeros(n_docs)
    for i in range(n_docs):
        labels = sorted({x for p in passes for x in p[i]})
        if not labels:
            continue
        y = np.array([[min(max(p[i].get(x, 0.0), 0.0), 1.0) for x in labels] for p in passes])  # (T, n_labels)
        relevance = 2.0**y - 1.0  # (T, n_labels)
        order = np.lexsort((np.arange(len(labels)), -relevance.mean(axis=0)))  # best mean relevance first, ties by name
        rank = np.empty(len(labels))
        rank[order] = np.arange(1, len(labels) + 1)  # (n_labels,) pi(j), 1-based
        out[i] = float((relevance / rank).sum(axis=1).mean())
    return out  # (n_docs,)


class BEAL(Strategy):
    """BEAL as published, lowest expected confidence first:
    ``s(x) = -(1/T) sum_t sum_j R(y_tj) / pi(j)`` (see :func:`expected_confidence`) over T passes
    of the whole network with dropout on (``SelectionConfig.ensemble.mc_passes``; encoder states
    recomputed in every pass, since dropout changes them)."""

    name, needs = "beal", "passes"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("passes")
        return -expected_confidence(outputs.passes or [], outputs.n_docs)  # (n_docs,)


class DeterministicBEAL(BEAL):
    """BEAL's deterministic ablation, ``s(x) = -sum_j R(y_j) / pi(j)``: one pass with dropout off
    (T = 1), the reference beam search's label probabilities."""

    name, needs = "beal_det", "beams"


class BALD(Strategy):
    """BALD over MC-dropout passes, per label as a Bernoulli and summed over the document's labels:
    ``s(x) = sum_j [H(mean_t y_tj) - mean_t H(y_tj)]``, the mutual information between a label's
    prediction and the weights (the passes disagree where it is high), with ``y_tj`` the label's
    probability in pass ``t`` (T passes of the whole network with dropout on, as for ``beal``)."""

    name, needs = "bald", "passes"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("passes")
        passes = outputs.passes or []
        out = np.zeros(outputs.n_docs)
        for i in range(outputs.n_docs):
            labels = sorted({x for p in passes for x in p[i]})
            if labels:
                y = np.array([[p[i].get(x, 0.0) for x in labels] for p in passes])  # (T, n_labels)
                out[i] = float((_bernoulli_entropy(y.mean(axis=0)) - _bernoulli_entropy(y).mean(axis=0)).sum())
        return out  # (n_docs,)


class LabelEntropy(Strategy):
    """Uncertainty sampling over the label probabilities: ``s(x) = sum_j H(y_j)``,
    ``H(y) = -y log y - (1 - y) log(1 - y)``, over every label ``j`` with probability ``y_j`` in the
    deterministic pass (the reference beam search's, fused where the model fuses; a generator-free
    model's own). Each label is a binary decision and a document's uncertainty is the sum of its
    labels' (as :class:`ClusterEntropy` sums its clusters'): a document torn over several labels comes
    before one torn over one; labels no source proposes have ``y = 0`` and add nothing."""

    name, needs = "label_entropy", "beams"

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("passes")
        probs = (outputs.passes or [[]])[0]
        out = np.zeros(outputs.n_docs)
        for i, p in enumerate(probs):
            if p:
                out[i] = float(_bernoulli_entropy(np.fromiter(p.values(), dtype=float)).sum())
        return out  # (n_docs,)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CoreSet(Strategy):
    """Core-Set (Sener & Savarese): ``s(x) = min_{l in labelled} ||e(x) - e(l)||`` over unit document
    vectors, and the batch by k-center greedy: take the document farthest from every labelled and every
    already taken one, repeat. Needs no decoding."""

    name, needs = "coreset", "none"
    uses_embeddings = uses_labelled = picks_batch = True

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("embeddings")
        pool = _unit_rows(np.asarray(outputs.embeddings, dtype=np.float64))  # (n_docs, dim)
        labelled = outputs.labelled_embeddings
        if labelled is None or len(labelled) == 0:
            return np.full(outputs.n_docs, 2.0)  # nothing labelled: every document is as far as it gets
        centers = _unit_rows(np.asarray(labelled, dtype=np.float64))  # (n_labelled, dim)
        return np.sqrt(np.maximum(2.0 - 2.0 * (pool @ centers.T).max(axis=1), 0.0))  # (n_docs,)

    def pick(self, outputs: PoolOutputs, candidates: np.ndarray, b: int) -> np.ndarray:
        pool = _unit_rows(np.asarray(outputs.embeddings, dtype=np.float64))  # (n_docs, dim)
        dist = self.score(outputs)  # (n_docs,) distance to the nearest center
        allowed = np.zeros(outputs.n_docs, dtype=bool)
        allowed[candidates] = True
        taken: list[int] = []
        for _ in range(min(b, int(allowed.sum()))):
            i = int(np.argmax(np.where(allowed, dist, -np.inf)))
            taken.append(i)
            allowed[i] = False
            dist = np.minimum(dist, np.sqrt(np.maximum(2.0 - 2.0 * (pool @ pool[i]), 0.0)))  # (n_docs,)
        return np.array(taken, dtype=int)


class DAL(Strategy):
    """Discriminative active learning (Gissin & Shalev-Shwartz): a logistic regression told labelled from
    unlabelled documents over their vectors; ``s(x) = P(unlabelled | e(x))``, the documents least like
    what is labelled first. Needs no decoding."""

    name, needs = "dal", "none"
    uses_embeddings = uses_labelled = True

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        outputs.require("embeddings")
        labelled = outputs.labelled_embeddings
        if labelled is None or len(labelled) == 0:
            return np.ones(outputs.n_docs)
        x = np.concatenate([outputs.embeddings, labelled])  # (n_docs + n_labelled, dim)
        y = np.r_[np.ones(outputs.n_docs), np.zeros(len(labelled))]
        clf = LogisticRegression(max_iter=1000, class_weight="balanced").fit(x, y)
        return clf.predict_proba(np.asarray(outputs.embeddings))[:, 1]  # (n_docs,)


class CVIRS(Strategy):
    """CVIRS (category vector inconsistency and ranking of scores, Reyes et al.): per label, documents
    ranked by the margin ``|2 y_j - 1|`` of the label's probability (most uncertain first), the ranks
    aggregated Borda-style into ``u(x)`` in [0, 1]; times the inconsistency ``v(x)``, the mean normalised
    Hamming distance between the predicted label vector (``y_j >= 0.5``) and the labelled documents'
    label vectors: ``s(x) = u(x) * v(x)``. Probabilities from the reference beam search (fused where
    the model fuses)."""

    name, needs = "cvirs", "beams"
    uses_labelled = True

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("passes")
        probs = (outputs.passes or [[]])[0]
        known = outputs.labelled_labels or []
        labels = sorted({x for p in probs for x in p} | {x for g in known for x in g})
        n = outputs.n_docs
        if not labels or n == 0:
            return np.zeros(n)
        col = {x: j for j, x in enumerate(labels)}
        y = np.zeros((n, len(labels)))  # (n_docs, n_labels)
        for i, p in enumerate(probs):
            for x, v in p.items():
                y[i, col[x]] = v
        ranks = np.argsort(np.argsort(np.abs(2 * y - 1), axis=0, kind="stable"), axis=0)  # (n_docs, n_labels), 0 = least margin
        u = ((n - 1 - ranks) / max(n - 1, 1)).mean(axis=1)  # (n_docs,)
        if not known:
            return u
        gold = np.zeros((len(known), len(labels)))  # (n_labelled, n_labels)
        for k, g in enumerate(known):
            gold[k, [col[x] for x in g]] = 1.0
        pred = (y >= 0.5).astype(float)  # (n_docs, n_labels)
        v = np.abs(pred[:, None, :] - gold[None, :, :]).mean(axis=2).mean(axis=1)  # (n_docs,)
        return u * v


class ALPS(Strategy):
    """ALPS (Yuan, Lin & Boyd-Graber, 2020) with the generator's own token losses as the surprisal. With
    ``t = (t_1, ..., t_n)`` the target ids of the reference beam search's best sequence ``y_1(x)`` (its labels
    joined by ``<sep>``, then eos: :func:`xlgen.tokenizer.encode_target`, cut to ``L``, the reference
    member's ``max_new_tokens``), teacher-forced by the torch model on the inputs the beams were decoded from
    (a ``retrieval`` model's with its candidate labels, an ``mcg`` model's with its cluster tokens):
    ``u_j(x) = -log p(t_j | t_<j, x)`` for ``j <= n``, ``u_j(x) = 0`` for ``n < j <= L``; the surprisal
    embedding ``e(x) = u(x) / ||u(x)||_2``; the batch: K-means (seeded, ``k = b``) over the candidates'
    ``e(x)``, and of each cluster the candidate nearest its centroid. ``s(x) = sum_j u_j(x)``, the total
    surprisal (``-log p(y_1 | x)`` when the generated ids are ``t``: no label repeated or segmented otherwise,
    no eos cut off at ``L``), only orders the candidates (and ``drop_top``); the batch comes from the clusters.

    An adaptation: ALPS embeds a document by a masked LM's per-token cross-entropy over the document's own
    tokens (the loss at a random 15% of the positions, 0 elsewhere). The packaged sentence encoder has no
    MLM head and the T5 is trained to generate labels, not to reconstruct its input, so neither has a
    loss over the document's tokens. The generator's loss over its output takes its place: with no labels
    (ALPS is label-free) the model's own best sequence stands for the observed tokens, and ``u(x)`` says
    at which positions of it, and how much, the model was surprised by what it chose. Every position
    counts, not a random 15%: a label sequence is a few tokens long.
    """

    name, needs = "alps", "surprisal"
    picks_batch = True

    def score(self, outputs: PoolOutputs) -> np.ndarray:
        outputs.require("surprisal")
        return np.asarray(outputs.surprisal, dtype=np.float64).sum(axis=1)  # (n_docs,)

    def pick(self, outputs: PoolOutputs, candidates: np.ndarray, b: int) -> np.ndarray:
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        scores = self.score(outputs)  # (n_docs,)
        candidates = np.asarray(candidates, dtype=int)
        if len(candidates) <= b:
            return candidates
        e = _unit_rows(np.asarray(outputs.surprisal, dtype=np.float64)[candidates])  # (n_candidates, L)
        with warnings.catch_warnings():  # fewer distinct vectors than b: the empty clusters are filled below
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=b, n_init=1, random_state=self.seed).fit(e)
        chosen: list[int] = []
        for c in range(b):
            members = np.flatnonzero(km.labels_ == c)
            if members.size:
                nearest = members[np.argmin(np.linalg.norm(e[members] - km.cluster_centers_[c], axis=1))]
                chosen.append(int(candidates[nearest]))
        taken = set(chosen)
        rest = [int(i) for i in candidates if int(i) not in taken]  # empty clusters: fill by score
        picked = np.array(chosen + rest[: b - len(chosen)], dtype=int)
        return picked[np.argsort(-scores[picked], kind="stable")]


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (RandomScore, SubwordRatio, BeamMargin, NBestEntropy, ClusterEntropy, VoteDisagreement, LabelSetVariance,
                ExpectedConfidence, BEAL, DeterministicBEAL, BALD, LabelEntropy, CoreSet, DAL, CVIRS, ALPS)
}


DEFAULT_STRATEGY = "margin"
"""The service's default: one beam search per document, the cheapest model-based strategy."""


def get_strategy(name: str, seed: int = 0) -> Strategy:
    """The acquisition function registered as ``name``, seeded with ``seed`` (``random``, ``alps``).

    Raises:
        ValueError: For an unknown name.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown acquisition strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](seed)
