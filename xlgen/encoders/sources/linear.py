"""Linear source: a linear ranker over TF-IDF features joined with the sentence embedding.

Features (as XR-Transformer combines sparse and dense views of a document):

    x(d) = [ tfidf(d) ; beta * e(d) ]

with tfidf(d) the L2-normalised TF-IDF vector (words and word bigrams, sublinear tf), e(d) the unit
sentence embedding and beta = ``embedding_weight``. Two models:

* ``ovr``: one logistic regression per label (L2, C = ``linear_c``):
  s_lin(d, l) = sigmoid(w_l . x(d) + b_l); every label is scored. The default solver fits a block of
  labels at once: L-BFGS over W (n_features, block) minimising
  mean_d sum_l BCE(x(d) W + b, y) + ||W||^2 / (2 C n), the same objective as C * sum BCE + ||w||^2 / 2
  per label, with x(d) W computed as a sparse product for the TF-IDF block plus a dense (BLAS) product for
  the embedding block; ``liblinear`` (one label at a time, dual coordinate descent) is the alternative.
* ``tree``: a label-tree forest (omikuji; Parabel / Bonsai style): s_lin(d, l) = mean over the trees
  of the product of the node classifiers' probabilities on the path to l; the ``top`` best labels come
  from a beam search. Fits thousands of labels in minutes where one-vs-rest needs hours.

Train scores are cross-fitted: train documents are split into ``cross_fit_folds`` folds and a
document's scores come from the model fitted on the other folds, so no document sees its own labels.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from xlgen.encoders.config import RetrieverConfig
from xlgen.encoders.sources.base import LabelSource, TrainData, top_sparse

_CONSTANT_LOGIT = 20.0  # a label without positives (or negatives) in a fold: sigmoid(-20) ~ 2e-9


class TfidfEmbeddingFeatures:
    """``x(d) = [tfidf(d) ; beta * e(d)]`` as CSR float32."""

    PARAMS: dict[str, Any] = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True, "dtype": np.float32}

    def __init__(self, max_features: int, embedding_weight: float) -> None:
        self.embedding_weight = embedding_weight
        self.vectorizer = TfidfVectorizer(max_features=max_features, **self.PARAMS)

    def fit(self, texts: Sequence[str]) -> TfidfEmbeddingFeatures:
        self.vectorizer.fit(texts)
        return self

    def transform(self, texts: Sequence[str], vectors: np.ndarray) -> sp.csr_matrix:
        if not len(texts):  # scikit-learn refuses empty input
            width = len(self.vectorizer.vocabulary_) + (vectors.shape[1] if self.embedding_weight else 0)
            return sp.csr_matrix((0, width), dtype=np.float32)
        tfidf = self.vectorizer.transform(texts)  # (n, vocab)
        if self.embedding_weight == 0:
            return sp.csr_matrix(tfidf, dtype=np.float32)
        dense = sp.csr_matrix(self.embedding_weight * vectors.astype(np.float32))  # (n, dim)
        return sp.hstack([tfidf, dense], format="csr", dtype=np.float32)  # (n, vocab + dim)

    def save(self, path: Path) -> None:
        vocab = self.vectorizer.vocabulary_
        (path / "tfidf.json").write_text(json.dumps({
            "max_features": self.vectorizer.max_features, "embedding_weight": self.embedding_weight,
            "vocabulary": sorted(vocab, key=vocab.__getitem__)}, ensure_ascii=False))
        np.save(path / "tfidf_idf.npy", self.vectorizer.idf_)

    @classmethod
    def load(cls, path: Path) -> TfidfEmbeddingFeatures:
        meta = json.loads((path / "tfidf.json").read_text())
        out = cls(meta["max_features"], meta["embedding_weight"])
        out.vectorizer.vocabulary_ = {t: i for i, t in enumerate(meta["vocabulary"])}
        out.vectorizer.idf_ = np.load(path / "tfidf_idf.npy")
        return out


def _fit_one(x: sp.csr_matrix, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # no positives (or no negatives) in this fold
        return np.zeros(x.shape[1], dtype=np.float32), (_CONSTANT_LOGIT if y[0] else -_CONSTANT_LOGIT)
    # liblinear's dual coordinate descent: the same L2 logistic regression as the primal solver (same
    # solution to its tolerance), 2-6x faster here, where the 384 dense columns multiply the non-zeros by ~15
    clf = LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=1000).fit(x, y)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


LABEL_BLOCK = 32
"""Labels fitted together by the L-BFGS solver: bounds its memory (history of 10 weight blocks)."""


def _fit_block(tfidf: sp.csr_matrix, dense: np.ndarray, y: np.ndarray, c: float, max_iter: int,
               init: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """L2 logistic regressions of the columns of ``y`` ``(n, L)`` fitted together (see the module doc)
    with torch's L-BFGS (strong Wolfe line search) in float32.

    Returns:
        ``(weights (L, n_features), bias (L,))`` float32, features ordered TF-IDF then dense.
    """
    import warnings

    import torch

    n, v = tfidf.shape
    n_labels = y.shape[1]
    t = tfidf.astype(np.float32).tocsr()
    tt = t.T.tocsr()  # (v, n): the gradient's sparse product
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long stable
        warnings.simplefilter("ignore")
        tx, txt = (torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(m.data), size=m.shape) for m in (t, tt))
    ex = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))  # (n, d)
    yt = torch.from_numpy(y.astype(np.float32))  # (n, L)
    lam = 1.0 / (c * n)
    if init is None:
        prior = y.mean(axis=0).clip(1e-4, 1 - 1e-4)
        w0, b0 = np.zeros((v + ex.shape[1], n_labels), np.float32), np.log(prior / (1 - prior)).astype(np.float32)
    else:
        w0, b0 = np.ascontiguousarray(init[0].T, dtype=np.float32), init[1].astype(np.float32)
    w = torch.from_numpy(w0).requires_grad_(True)  # (width, L)
    b = torch.from_numpy(b0).requires_grad_(True)  # (L,)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        with torch.no_grad():  # gradients by hand: two sparse products instead of autograd through CSR
            z = torch.sparse.mm(tx, w[:v]) + ex @ w[v:] + b  # (n, L)
            loss = (torch.nn.functional.softplus(z) - yt * z).sum() / n + 0.5 * lam * (w * w).sum()
            g = (torch.sigmoid(z) - yt) / n  # (n, L)
            w.grad = torch.cat([torch.sparse.mm(txt, g), ex.T @ g]) + lam * w  # (width, L)
            b.grad = g.sum(dim=0)
        return loss

    opt.step(closure)
    return w.detach().numpy().T.copy(order="F"), b.detach().numpy().copy()


class OvrModel:
    """One logistic regression per label: ``sigmoid(x W^T + b)``."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray) -> None:
        # column-major, so that ``weights.T`` is C-contiguous: scipy's sparse product copies a dense operand
        # that is not (the whole matrix on every call, most of a small request's scoring time)
        self.weights = np.asfortranarray(weights)  # (n_labels, n_features)
        self.bias = bias  # (n_labels,)
        self.n_labels = int(weights.shape[0])

    @classmethod
    def fit(cls, x: sp.csr_matrix, y: sp.csr_matrix, c: float, jobs: int, solver: str = "liblinear", dense_cols: int = 0,
            max_iter: int = 100, init: OvrModel | None = None) -> OvrModel:
        """Fits every label.

        Args:
            x: ``(n, n_features)`` features; the last ``dense_cols`` columns are the dense embedding block.
            y: ``(n, n_labels)`` binary labels.
            c: Inverse L2 strength.
            jobs: Parallel fits (liblinear: labels; lbfgs: label blocks).
            solver: ``lbfgs`` or ``liblinear``.
            dense_cols: Width of the dense block (lbfgs).
            max_iter: L-BFGS iterations.
            init: A model to start from (lbfgs; a cross-fitted fold starts from the full fit).
        """
        from joblib import Parallel, delayed, parallel_config

        yd = np.asarray(y.todense(), dtype=np.int8)  # (n, n_labels)
        if solver == "lbfgs":
            v = x.shape[1] - dense_cols
            tfidf = x[:, :v].tocsr()  # (n, v)
            dense = np.asarray(x[:, v:].todense(), dtype=np.float32)  # (n, dense_cols)
            blocks = [np.arange(a, min(a + LABEL_BLOCK, yd.shape[1])) for a in range(0, yd.shape[1], LABEL_BLOCK)]
            inits = [None if init is None else (init.weights[b], init.bias[b]) for b in blocks]
            with parallel_config(max_nbytes=None):
                parts = Parallel(n_jobs=min(jobs, len(blocks)) or 1, prefer="threads")(
                    delayed(_fit_block)(tfidf, dense, yd[:, b], c, max_iter, i) for b, i in zip(blocks, inits, strict=True))
            if not parts:
                return cls(np.zeros((0, x.shape[1]), dtype=np.float32), np.zeros(0, dtype=np.float32))
            return cls(np.concatenate([w for w, _ in parts]), np.concatenate([b for _, b in parts]))
        with parallel_config(max_nbytes=None):  # liblinear writes into its copies of the inputs
            fitted = Parallel(n_jobs=jobs)(delayed(_fit_one)(x, yd[:, j], c) for j in range(yd.shape[1]))
        weights = np.stack([w for w, _ in fitted]) if fitted else np.zeros((0, x.shape[1]), dtype=np.float32)
        return cls(weights, np.array([b for _, b in fitted], dtype=np.float32))

    def scores(self, x: sp.csr_matrix, top: int) -> sp.csr_matrix:
        logits = np.asarray(x @ self.weights.T) + self.bias  # (n, n_labels)
        return top_sparse(1.0 / (1.0 + np.exp(-logits)))

    def save(self, path: Path) -> None:
        np.save(path / "ovr_weights.npy", self.weights)
        np.save(path / "ovr_bias.npy", self.bias)

    @classmethod
    def load(cls, path: Path) -> OvrModel:
        return cls(np.load(path / "ovr_weights.npy"), np.load(path / "ovr_bias.npy"))


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silences the tree library's progress bars, which its native code writes straight to fd 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TreeModel:
    """omikuji's label-tree forest (Parabel / Bonsai style: balanced 2-means label trees, linear node
    classifiers, beam search); ``omikuji.Model.default_hyper_param()`` (3 trees)."""

    def __init__(self, model: Any, n_labels: int, threads: int) -> None:
        self.model, self.n_labels = model, n_labels
        self.model.init_prediction_thread_pool(threads)

    @classmethod
    def fit(cls, x: sp.csr_matrix, y: sp.csr_matrix, jobs: int) -> TreeModel:
        import omikuji

        with tempfile.TemporaryDirectory(prefix="xlgen-tree-") as tmp:
            data = Path(tmp) / "train.txt"
            with open(data, "w") as fh:  # the library trains from its text format only
                fh.write(f"{x.shape[0]} {x.shape[1]} {y.shape[1]}\n")
                for i in range(x.shape[0]):
                    row, labels = x[i], y.indices[y.indptr[i] : y.indptr[i + 1]]
                    feats = " ".join(f"{c}:{v:.7g}" for c, v in zip(row.indices.tolist(), row.data.tolist(), strict=True))
                    fh.write(f"{','.join(map(str, labels.tolist()))} {feats}\n")
            with _quiet_stderr():
                model = omikuji.Model.train_on_data(str(data), omikuji.Model.default_hyper_param(), n_threads=jobs)
        return cls(model, y.shape[1], jobs)

    def scores(self, x: sp.csr_matrix, top: int) -> sp.csr_matrix:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i in range(x.shape[0]):
            a, b = x.indptr[i], x.indptr[i + 1]
            for j, v in self.model.predict(list(zip(x.indices[a:b].tolist(), x.data[a:b].tolist(), strict=True)),
                                           beam_size=max(10, top), top_k=top):
                rows.append(i)
                cols.append(j)
                vals.append(v)
        return sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(x.shape[0], self.n_labels))

    def save(self, path: Path) -> None:
        (path / "tree").mkdir(parents=True, exist_ok=True)
        self.model.save(str(path / "tree"))
        (path / "tree.json").write_text(json.dumps({"n_labels": self.n_labels}))

    @classmethod
    def load(cls, path: Path, threads: int) -> TreeModel:
        import omikuji

        return cls(omikuji.Model.load(str(path / "tree")), json.loads((path / "tree.json").read_text())["n_labels"], threads)


class LinearSource(LabelSource):
    """A linear ranker over TF-IDF ⊕ embedding features (one-vs-rest LR or a label tree)."""

    name = "linear"

    def __init__(self, config: RetrieverConfig) -> None:
        super().__init__(config)
        self.features: TfidfEmbeddingFeatures | None = None
        self.model: OvrModel | TreeModel | None = None
        self.kind = ""
        self._train: TrainData | None = None
        self._fold_of: np.ndarray | None = None
        self._fold_models: list[OvrModel | TreeModel] = []

    def _kind(self, n_labels: int) -> str:
        if self.config.linear_model != "auto":
            return self.config.linear_model
        return "ovr" if n_labels <= self.config.linear_ovr_limit else "tree"

    def _fit_model(self, x: sp.csr_matrix, y: sp.csr_matrix, init: OvrModel | TreeModel | None = None) -> OvrModel | TreeModel:
        c = self.config
        if self.kind == "ovr":
            assert self.features is not None
            dense = x.shape[1] - len(self.features.vectorizer.vocabulary_)
            warm = init if isinstance(init, OvrModel) else None
            return OvrModel.fit(x, y, c.linear_c, c.jobs, c.linear_solver, dense, c.linear_max_iter, warm)
        return TreeModel.fit(x, y, c.jobs)

    def fit(self, train: TrainData, label_vectors: np.ndarray) -> None:
        c = self.config
        self.kind = self._kind(train.y.shape[1])
        self.features = TfidfEmbeddingFeatures(c.tfidf_max_features, c.embedding_weight).fit(train.texts)
        self.model = self._fit_model(self.features.transform(train.texts, train.vectors), train.y)
        self._train = train  # kept (not saved) for the cross-fitted train scores

    def score(self, texts: Sequence[str], vectors: np.ndarray, top: int) -> sp.csr_matrix:
        assert self.features is not None and self.model is not None, "fit the source first"
        return self.model.scores(self.features.transform(texts, vectors), top)

    def _cross_fit(self) -> None:
        if self._train is None:
            raise RuntimeError("leak-free train scores need the train data: call score_train on the retriever "
                               "that was fitted, not on a loaded one")
        assert self.features is not None
        n = len(self._train.texts)
        rng = np.random.default_rng(self.config.seed)
        self._fold_of = rng.permutation(n) % self.config.cross_fit_folds  # (n,) fold of each train document
        x = self.features.transform(self._train.texts, self._train.vectors)
        for f in range(self.config.cross_fit_folds):
            rest = np.flatnonzero(self._fold_of != f)
            # each fold from scratch: started from the full fit, a stopped L-BFGS would remember the held-out fold
            self._fold_models.append(self._fit_model(x[rest], self._train.y[rest]))

    def score_train(self, texts: Sequence[str], vectors: np.ndarray, rows: np.ndarray, top: int) -> sp.csr_matrix:
        assert self.features is not None and self.model is not None, "fit the source first"
        if not self._fold_models:
            self._cross_fit()
        assert self._fold_of is not None
        x = self.features.transform(texts, vectors)
        folds = self._fold_of[np.asarray(rows)]
        parts: list[sp.csr_matrix] = []
        order: list[np.ndarray] = []
        for f in range(self.config.cross_fit_folds):
            idx = np.flatnonzero(folds == f)
            if len(idx):
                parts.append(self._fold_models[f].scores(x[idx], top))
                order.append(idx)
        if not parts:
            return sp.csr_matrix((0, self.model.n_labels), dtype=np.float32)
        stacked = sp.vstack(parts, format="csr")  # rows in fold order
        perm = np.empty(len(rows), dtype=np.int64)
        perm[np.concatenate(order)] = np.arange(len(rows))
        return stacked[perm]

    def save(self, path: Path) -> None:
        assert self.features is not None and self.model is not None, "fit the source first"
        path.mkdir(parents=True, exist_ok=True)
        (path / "linear.json").write_text(json.dumps({"kind": self.kind}))
        self.features.save(path)
        self.model.save(path)

    @classmethod
    def load(cls, path: Path, config: RetrieverConfig, label_vectors: np.ndarray) -> LinearSource:
        out = cls(config)
        out.kind = json.loads((path / "linear.json").read_text())["kind"]
        out.features = TfidfEmbeddingFeatures.load(path)
        out.model = OvrModel.load(path) if out.kind == "ovr" else TreeModel.load(path, config.jobs)
        return out
