"""Run by tests/integration/test_train.py under ``accelerate launch``: trains the tiny preset and writes each
rank's weight digest."""

import os
import sys
from pathlib import Path

from xlgen.training.config import TrainConfig
from xlgen.training.train import run

data, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig(data=data, output_dir=str(out), preset="tiny", max_steps=12, eval_every=6, batch_size=8, lr=5e-3,
                  max_target_length=16, max_input_length=48, progress=False, threads=1)
result = run(cfg)
rank = int(os.environ.get("RANK", "0"))
(out / f"rank{rank}.digest").write_text(result.weights_digest)
