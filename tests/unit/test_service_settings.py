"""Service settings from the environment and the ``xlgen serve`` options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from xlgen.service.serve import add_serve_arguments
from xlgen.service.settings import Settings


def test_settings_from_environment_round_trip() -> None:
    s = Settings.from_env({"XLGEN_MODEL": "/m", "XLGEN_MAX_TEXTS": "5", "XLGEN_BF16": "false", "XLGEN_MAX_WAIT_MS": "2.5",
                           "XLGEN_MAX_CLAIMS_PER_ANNOTATOR": "7", "XLGEN_RETRAIN_ENCODER": "never"})
    assert s.retrain_encoder == "never" and Settings().retrain_encoder == "auto"
    assert (s.model, s.max_texts, s.bf16, s.max_wait_ms, s.max_claims_per_annotator) == ("/m", 5, False, 2.5, 7)
    assert Settings.from_env(s.to_env()) == s
    assert Settings.from_env({}, api_key="k").api_key == "k"
    assert Settings(work_dir="/w").database_url == "sqlite:////w/xlgen.db"
    assert Settings(db_url="postgresql://u@h/db").database_url == "postgresql://u@h/db"


@pytest.mark.parametrize(("env", "match"), [({"XLGEN_MAX_TEXTS": "many"}, "XLGEN_MAX_TEXTS"), ({"XLGEN_MAX_TEXTS": "0"}, "MAX_TEXTS"),
                                            ({"XLGEN_RETRAIN_ENCODER": "sometimes"}, "XLGEN_RETRAIN_ENCODER must be one of auto")])
def test_bad_settings_are_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Settings.from_env(env)


def test_serve_options_override_only_what_is_given() -> None:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    args = p.parse_args(["--model", "dir", "--port", "9000", "--no-bf16"])
    assert (args.model, args.port, args.bf16, args.workers) == ("dir", 9000, False, 1)
    assert not hasattr(args, "api_key")  # unset: the environment's value holds


def test_paths_are_made_absolute_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs" / "base").mkdir(parents=True)
    (tmp_path / "clusters").mkdir()
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({"XLGEN_MODEL": "runs/model", "XLGEN_WORK_DIR": "svc", "XLGEN_TRAIN_DATA": "data/goemotions",
                           "XLGEN_DB_URL": "sqlite:///svc/other.db",
                           "XLGEN_RETRAIN_ARGS": "--preset tiny --base-model runs/base --clusters=clusters --base-model t5-small"})
    assert (s.model, s.work_dir, s.train_data) == (str(tmp_path / "runs/model"), str(tmp_path / "svc"), str(tmp_path / "data/goemotions"))
    assert s.db_url == f"sqlite:///{tmp_path / 'svc/other.db'}" and s.database_url == s.db_url
    assert s.retrain_args == f"--preset tiny --base-model {tmp_path / 'runs/base'} --clusters={tmp_path / 'clusters'} --base-model t5-small"
    assert Settings.from_env(s.to_env()) == s  # the workers read back the same absolute paths
    assert Settings(work_dir="svc").database_url == f"sqlite:///{tmp_path / 'svc/xlgen.db'}"
    assert Settings(db_url="postgresql://u@h/db").db_url == "postgresql://u@h/db" and Settings().train_data == ""
    with pytest.raises(ValueError, match="RETRAIN_ARGS"):
        Settings(retrain_args="--preset 'tiny")
