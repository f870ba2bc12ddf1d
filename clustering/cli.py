"""``xlgen cluster``: cluster a dataset's labels and save the artifact that ``xlgen train --clusters``
reads (``xlgen train --variant bcl|mcg`` builds one on the fly when none is given)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from xlgen.clustering.kmeans import ClusterConfig, build_clusters
from xlgen.config import add_arguments, from_arguments
from xlgen.data import find_split, read_documents


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder (its train split is clustered) or a labelled JSON Lines file")
    parser.add_argument("--output", required=True, help="artifact folder to write (clusters.json, centroids.npy, features/)")
    add_arguments(parser, ClusterConfig)


def cmd_cluster(args: argparse.Namespace) -> int:
    cfg = from_arguments(ClusterConfig, args)
    data = Path(args.data)
    docs = read_documents(find_split(data, "train") if data.is_dir() else data)
    out = Path(args.output)
    features = out.with_name(f".{out.name}.features")
    try:
        clusters, feats_dir = build_clusters(docs, cfg, work_dir=features)
        clusters.save(out, feats_dir)
    finally:
        shutil.rmtree(features, ignore_errors=True)
    sizes = np.bincount(list(clusters.assignment.values()), minlength=clusters.n_clusters)
    print(json.dumps({"labels": len(clusters), "clusters": clusters.n_clusters, "source": clusters.source,
                      "smallest": int(sizes.min()), "largest": int(sizes.max()), "hash": clusters.digest()}))
    print(f"clusters saved to {out}")
    return 0
