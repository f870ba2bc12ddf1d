"""Which splits a training run reads: the test split is evaluated unless the run says not to."""

from __future__ import annotations

from pathlib import Path

from xlgen.training.config import TrainConfig
from xlgen.training.train import load_splits


def test_the_test_split_is_read_unless_evaluate_test_is_off(tiny_data: Path) -> None:
    train, dev, test = load_splits(TrainConfig(data=str(tiny_data)))
    assert (len(train), len(dev), len(test or [])) == (400, 60, 60)
    train, dev, test = load_splits(TrainConfig(data=str(tiny_data), evaluate_test=False))
    assert (len(train), len(dev), test) == (400, 60, None)
