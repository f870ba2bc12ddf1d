"""On-disk embedding cache: a dataset is embedded once per encoder, across runs and benchmarks.

One SQLite file per encoder key (``<root>/<key>.sqlite``) maps the 16-byte sha256 prefix of a text to
its float32 vector. SQLite gives what a cache shared by processes needs: concurrent writers serialise
on its lock (WAL journal, a generous busy timeout), and a writer killed mid-transaction leaves the file
as it was before that transaction.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

CACHE_ENV = "XLGEN_CACHE_DIR"
"""Environment variable naming xlgen's cache root (default ``~/.cache/xlgen``); embeddings live in its
``embeddings/`` folder, converted encoders in ``encoders/``."""

_CHUNK = 500  # SQLite's default limit on bound parameters is 999 (older builds)


def cache_root() -> Path:
    """xlgen's cache root: ``$XLGEN_CACHE_DIR`` or ``~/.cache/xlgen``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xlgen"


def text_key(text: str) -> bytes:
    """The cache key of a text: the first 16 bytes of its UTF-8 sha256."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


class EmbeddingCache:
    """Vectors by (encoder key, text), in one SQLite file per encoder key.

    Args:
        root: The folder of the cache files; default ``cache_root() / "embeddings"``.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "embeddings"

    def _connect(self, key: str, dim: int) -> sqlite3.Connection:
        if not key or any(c in key for c in "/\\") or key.startswith("."):
            raise ValueError(f"bad encoder key {key!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.root / f"{key}.sqlite", timeout=120.0)
        # 16 KiB pages hold ten 1.5 KB vectors with little waste (a no-op once the file exists)
        con.execute("PRAGMA page_size=16384")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        with con:
            con.execute("CREATE TABLE IF NOT EXISTS vectors (h BLOB PRIMARY KEY, v BLOB NOT NULL)")
            con.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            con.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(dim),))
        stored = int(con.execute("SELECT v FROM meta WHERE k = 'dim'").fetchone()[0])
        if stored != dim:
            con.close()
            raise ValueError(f"{self.root / key}.sqlite holds {stored}-dimensional vectors, not {dim}")
        return con

    def get(self, key: str, texts: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Looks texts up.

        Args:
            key: The encoder key (:attr:`SentenceEncoder.cache_key`).
            texts: The texts.
            dim: The vector dimension.

        Returns:
            ``(vectors, found)``: ``(n, dim)`` float32 with zeros where missing, and a ``(n,)`` bool mask.
        """
        out = np.zeros((len(texts), dim), dtype=np.float32)  # (n, dim)
        found = np.zeros(len(texts), dtype=bool)
        if not texts or not (self.root / f"{key}.sqlite").is_file():
            return out, found
        keys = [text_key(t) for t in texts]
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        unique = list(where)
        with closing(self._connect(key, dim)) as con:
            for start in range(0, len(unique), _CHUNK):
                part = unique[start : start + _CHUNK]
                rows = con.execute(f"SELECT h, v FROM vectors WHERE h IN ({','.join('?' * len(part))})", part).fetchall()
                for h, v in rows:
                    vec = np.frombuffer(v, dtype=np.float32)
                    if vec.shape[0] != dim:
                        continue  # never written by this code; treat as missing
                    for i in where[h]:
                        out[i] = vec
                        found[i] = True
        return out, found

    def put(self, key: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Stores vectors (first writer of a text wins; all of one call commit together or not at all).

        Args:
            key: The encoder key.
            texts: The texts.
            vectors: ``(len(texts), dim)`` vectors, stored as float32.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(texts)} texts")
        if not texts:
            return
        rows = [(text_key(t), vectors[i].tobytes()) for i, t in enumerate(texts)]
        with closing(self._connect(key, vectors.shape[1])) as con, con:
            con.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)

    def count(self, key: str) -> int:
        """How many vectors the cache holds for ``key``."""
        path = self.root / f"{key}.sqlite"
        if not path.is_file():
            return 0
        with closing(sqlite3.connect(path, timeout=120.0)) as con:
            return int(con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
