"""What fine-tuning the sentence encoder adds to a retraining: the fine-tuning on the replayed train pairs
(as ``xlgen.training.train --fine-tune-encoder`` does it), then the new embeddings of the train split (the
embedding cache cannot serve a new encoder).

    python benchmarks/retrain_encoder_cost.py --data data/goemotions --pairs 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xlgen.data import find_split, read_documents  # noqa: E402
from xlgen.encoders import EncoderConfig, SentenceEncoder  # noqa: E402
from xlgen.training.retriever import BiEncoderConfig, fine_tune_bi_encoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "goemotions"), help="dataset folder")
    p.add_argument("--encoder", default="all-MiniLM-L6-v2")
    p.add_argument("--pairs", type=int, default=2000, help="replayed train pairs (--encoder-pairs)")
    p.add_argument("--quantization", default="int8", help="the new encoder's CTranslate2 weights for the embedding")
    args = p.parse_args()
    train = read_documents(find_split(args.data, "train"))
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        path = fine_tune_bi_encoder(args.encoder, train, BiEncoderConfig(output_dir=f"{work}/encoder", max_pairs=args.pairs),
                                    progress=False)
        tune_s = time.perf_counter() - started
        started = time.perf_counter()
        encoder = SentenceEncoder.load(EncoderConfig(name=str(path), quantization=args.quantization))
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        encoder.encode([d.text for d in train])
        embed_s = time.perf_counter() - started
    print(f"fine-tuning on {args.pairs} pairs: {tune_s:.1f} s; loading (and converting) the new encoder: {load_s:.1f} s; "
          f"embedding the {len(train):,} train texts: {embed_s:.1f} s")


if __name__ == "__main__":
    main()
