"""The label retriever: candidate labels for a document from several label sources over a sentence encoder.

Sources (``xlgen/encoders/sources/``, each usable alone, formulas in their modules):

* ``knn``: similarity-weighted label votes of the k nearest train documents;
* ``label_text``: cosine similarity to each label's text (name, description, examples), so a label
  added by name alone (:meth:`LabelRetriever.add_label`) is retrievable at once, without retraining;
* ``linear``: a linear ranker over TF-IDF ⊕ embedding features (one-vs-rest logistic regression, or a
  probabilistic label tree for thousands of labels).

:meth:`LabelRetriever.score` returns :class:`~xlgen.encoders.candidates.Candidates`: per document the
union of every source's top-K labels with every source's score and rank, the features a calibrator
fuses. :meth:`LabelRetriever.score_train` gives the same for the train documents, leak-free (kNN without
the document itself, the linear source cross-fitted), for building training-time candidates.

Saved as a folder (``retriever.json``, ``labels.jsonl``, ``label_vectors.npy``, ``sources/<name>/``) that
refers to an installed or hub encoder by name and weights digest instead of copying it; an encoder loaded
from a local directory (a fine-tuned one, say) is copied into ``encoder/``, so the folder works wherever
it is moved and whether or not that directory still exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xlgen.data import Document
from xlgen.encoders.cache import EmbeddingCache
from xlgen.encoders.candidates import Candidates, merge_sources
from xlgen.encoders.config import RetrieverConfig
from xlgen.encoders.encoder import EncoderConfig, EncoderReference, SentenceEncoder
from xlgen.encoders.label_texts import LabelText, complete_label_texts, read_label_file, write_label_file
from xlgen.encoders.packaged import EncoderUnavailableError, is_packaged
from xlgen.encoders.sources import SOURCES, LabelSource, TrainData
from xlgen.files import atomic_dir
from xlgen.labels import LabelSpace

FORMAT_VERSION = 1
BUNDLED_ENCODER = "encoder"
"""Sub-folder of a saved retriever that holds its encoder when that encoder was a local directory."""
CHUNK_DOCS = 2048
"""Documents scored per block: bounds the ``(chunk, n_labels)`` score blocks of dense sources."""


def train_fingerprint(docs: Sequence[Document]) -> str:
    """Digest of train texts and labels, in order: ``score_train`` must see the documents ``fit`` saw."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.text.encode("utf-8") + b"\0" + "\x1f".join(d.labels).encode("utf-8") + b"\n")
    return h.hexdigest()


def label_vectors(encoder: SentenceEncoder, texts: Sequence[LabelText], cache: EmbeddingCache | None = None) -> np.ndarray:
    """Each label's unit vector: the normalised mean of the embeddings of its texts.

    Returns:
        ``(len(texts), dim)`` float32.
    """
    flat = [t for lt in texts for t in lt.texts()]
    owner = np.repeat(np.arange(len(texts)), [len(lt.texts()) for lt in texts])
    vecs = encoder.encode(flat, cache=cache)  # (n_texts, dim)
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)  # (n_labels, dim)
    np.add.at(out, owner, vecs)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def label_matrix(docs: Sequence[Document], labels: Sequence[str]) -> sp.csr_matrix:
    """``(n_docs, n_labels)`` binary float32 matrix of the documents' labels (labels outside ``labels`` ignored)."""
    col = {x: j for j, x in enumerate(labels)}
    pairs = [(i, col[x]) for i, d in enumerate(docs) for x in set(d.labels) if x in col]
    rows = np.array([i for i, _ in pairs], dtype=np.int64)
    cols = np.array([j for _, j in pairs], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (rows, cols)), shape=(len(docs), len(labels)))


class LabelRetriever:
    """Candidate labels with per-source scores. Build with :meth:`fit` or :meth:`load`.

    Attributes:
        config: The configuration (its ``encoder`` is the name the encoder was loaded by).
        encoder: The sentence encoder.
        label_texts: One :class:`LabelText` per label, in label order.
        counts: Train count of each label (0 for labels added by name or only in the label file).
        sources: The fitted sources by name, in ``config.sources`` order.
        fit_seconds: Fitting time of each source (and ``embed`` for the train embeddings); empty after load.
    """

    def __init__(self, config: RetrieverConfig, encoder: SentenceEncoder, label_texts: Sequence[LabelText],
                 counts: Mapping[str, int], vectors: np.ndarray, sources: Mapping[str, LabelSource], fingerprint: str,
                 cache: EmbeddingCache | None = None) -> None:
        self.config = config
        self.encoder = encoder
        self.label_texts = list(label_texts)
        self.counts = dict(counts)
        self.label_vectors = vectors
        self.sources = dict(sources)
        self.fingerprint = fingerprint
        self.cache = cache
        self.fit_seconds: dict[str, float] = {}
        self._train: TrainData | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label the retriever scores, train labels first (by decreasing count), then added ones."""
        return tuple(t.label for t in self.label_texts)

    @classmethod
    def fit(cls, train_docs: Sequence[Document], label_texts: Mapping[str, LabelText] | str | Path | None = None, *,
            config: RetrieverConfig | None = None, encoder: SentenceEncoder | None = None,
            cache: EmbeddingCache | None = None, progress: bool = False) -> LabelRetriever:
        """Embeds the train documents and fits every configured source.

        Args:
            train_docs: Labelled train documents.
            label_texts: Descriptions / examples per label, or the path of a JSON Lines label file; labels
                it names that no train document has are scored too (by ``label_text`` only).
            config: Retriever settings; default :class:`RetrieverConfig`.
            encoder: A loaded encoder; default the one ``config.encoder`` names.
            cache: Embedding cache for train texts, label texts and later queries.
            progress: Show a progress bar while embedding.
        """
        config = config or RetrieverConfig()
        if not train_docs:
            raise ValueError("the retriever needs train documents")
        if encoder is None:
            encoder = SentenceEncoder.load(EncoderConfig(name=config.encoder, quantization=config.encoder_quantization))
        config = replace(config, encoder=encoder.name, encoder_quantization=encoder.numerics)  # what was really used
        given = read_label_file(label_texts) if isinstance(label_texts, str | Path) else dict(label_texts or {})
        space = LabelSpace.from_documents(train_docs)
        names = list(space.labels) + [x for x in given if x not in space]
        texts = complete_label_texts(names, given)
        counts = {x: space.count(x) for x in names}

        started = time.perf_counter()
        vectors = encoder.encode([d.text for d in train_docs], cache=cache, progress=progress)  # (n_train, dim)
        lvecs = label_vectors(encoder, texts, cache)
        embed_s = time.perf_counter() - started
        train = TrainData([d.text for d in train_docs], vectors, label_matrix(train_docs, names))

        sources: dict[str, LabelSource] = {}
        seconds = {"embed": embed_s}
        for name in config.sources:
            started = time.perf_counter()
            source = SOURCES[name](config)
            source.fit(train, lvecs)
            sources[name] = source
            seconds[name] = time.perf_counter() - started
        out = cls(config, encoder, texts, counts, lvecs, sources, train_fingerprint(train_docs), cache)
        out.fit_seconds = seconds
        out._train = train
        return out

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit embeddings of texts through the retriever's encoder and cache, ``(n, dim)``."""
        return self.encoder.encode(texts, cache=self.cache, progress=progress)

    def _merge(self, blocks: list[sp.csr_matrix], top: int, vectors: np.ndarray) -> Candidates:
        return merge_sources(self.labels, list(self.sources), blocks, top, [s.pair_scores(vectors) for s in self.sources.values()])

    def score(self, texts: Sequence[str], top: int | None = None, vectors: np.ndarray | None = None,
              progress: bool = False) -> Candidates:
        """Candidate labels of new documents.

        Args:
            texts: Document texts.
            top: K, the candidates each source contributes; default ``config.candidates``.
            vectors: Their embeddings, if already computed (``(n, dim)``); else embedded here.
            progress: Show a progress bar while embedding.
        """
        top = top or self.config.candidates
        texts = list(texts)
        if vectors is None:
            vectors = self.embed(texts, progress)
        parts = []
        for start in range(0, max(len(texts), 1), CHUNK_DOCS):
            t, v = texts[start : start + CHUNK_DOCS], vectors[start : start + CHUNK_DOCS]
            parts.append(self._merge([s.score(t, v, top) for s in self.sources.values()], top, v))
        return Candidates.concat(parts)

    def score_train(self, train_docs: Sequence[Document], top: int | None = None) -> Candidates:
        """Leak-free candidates of the train documents ``fit`` saw (same documents, same order): kNN
        leaves each document out of its own neighbours, the linear source scores each document with a
        model fitted on the other folds. Only on a retriever fitted in this process.

        Raises:
            ValueError: If ``train_docs`` are not the fitted documents.
            RuntimeError: On a loaded retriever (the train data are not saved).
        """
        if self._train is None:
            raise RuntimeError("score_train needs the retriever fitted in this process (a loaded one keeps no train data)")
        if train_fingerprint(train_docs) != self.fingerprint:
            raise ValueError("score_train takes exactly the documents the retriever was fitted on, in the same order")
        top = top or self.config.candidates
        parts = []
        n = len(train_docs)
        for start in range(0, n, CHUNK_DOCS):
            rows = np.arange(start, min(start + CHUNK_DOCS, n))
            t = [self._train.texts[int(i)] for i in rows]
            v = self._train.vectors[rows]
            parts.append(self._merge([s.score_train(t, v, rows, top) for s in self.sources.values()], top, v))
        return Candidates.concat(parts)

    def add_label(self, name: str, description: str | None = None, examples: Sequence[str] = ()) -> None:
        """Adds a label (or replaces a known label's text), scored at once by the ``label_text`` source.

        Args:
            name: The label string.
            description: Optional description.
            examples: Optional example phrases.
        """
        text = LabelText(name.strip(), description, tuple(examples))
        vec = label_vectors(self.encoder, [text], self.cache)  # (1, dim)
        if text.label in self.counts:
            j = self.labels.index(text.label)
            self.label_texts[j] = text
            self.label_vectors = self.label_vectors.copy()
            self.label_vectors[j] = vec[0]
        else:
            self.label_texts.append(text)
            self.counts[text.label] = 0
            self.label_vectors = np.concatenate([self.label_vectors, vec])
        for source in self.sources.values():
            source.set_label_vectors(self.label_vectors)

    def local_encoder_dir(self) -> Path | None:
        """The local directory the encoder was loaded from (None: the packaged encoder or a hub name)."""
        if is_packaged(self.encoder.name):
            return None
        local = Path(self.encoder.name).expanduser()
        return local if local.is_dir() else None

    def save(self, path: str | Path) -> None:
        """Writes the retriever into the folder ``path``: an installed or hub encoder by name and digest
        only, an encoder from a local directory copied into ``path/encoder``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        encoder: dict[str, str] = {"name": self.encoder.name, "digest": self.encoder.digest, "numerics": self.encoder.numerics}
        local = self.local_encoder_dir()
        if local is not None:
            target = path / BUNDLED_ENCODER
            if not (target.is_dir() and target.resolve() == local.resolve()):  # not re-saved in place
                with atomic_dir(target) as tmp:
                    shutil.copytree(local, tmp, dirs_exist_ok=True)
            encoder["bundled"] = BUNDLED_ENCODER
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "encoder": encoder,
            "counts": [self.counts[x] for x in self.labels],
            "train_fingerprint": self.fingerprint,
        }
        write_label_file(self.label_texts, path / "labels.jsonl")
        np.save(path / "label_vectors.npy", self.label_vectors)
        for name, source in self.sources.items():
            source.save(path / "sources" / name)
        (path / "retriever.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, encoder: SentenceEncoder | None = None, cache: EmbeddingCache | None = None) -> LabelRetriever:
        """Reads a saved retriever.

        Args:
            path: The folder :meth:`save` wrote.
            encoder: The encoder to use (its digest must match the saved one); default: load it by name.
            cache: Embedding cache for queries.

        Raises:
            EncoderUnavailableError: If the encoder's weights are not the ones the retriever was built with.
        """
        path = Path(path)
        meta = json.loads((path / "retriever.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: retriever format {meta.get('format_version')} is not {FORMAT_VERSION}")
        config = RetrieverConfig.from_dict(meta["config"])
        ref = EncoderReference(**{k: meta["encoder"][k] for k in ("name", "digest")})
        if meta["encoder"].get("bundled"):
            ref = EncoderReference(str(path / meta["encoder"]["bundled"]), ref.digest)
        if encoder is None:
            encoder = SentenceEncoder.load(EncoderConfig(name=ref.name, quantization=config.encoder_quantization))
        if encoder.digest != ref.digest:
            raise EncoderUnavailableError(f"{path} was built with encoder {ref.name!r} of digest {ref.digest}; "
                                          f"the encoder given has digest {encoder.digest}")
        given = read_label_file(path / "labels.jsonl")
        texts = list(given.values())
        vectors = np.load(path / "label_vectors.npy")
        counts = dict(zip([t.label for t in texts], meta["counts"], strict=True))
        sources = {name: SOURCES[name].load(path / "sources" / name, config, vectors) for name in config.sources}
        return cls(config, encoder, texts, counts, vectors, sources, meta["train_fingerprint"], cache)
