"""Claiming through ``/v1/al/next-batch`` (the API key, a per-annotator cap, release) and the labels an
annotation may carry, through the test client."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import KEY, pool_docs, running, settings_for


def test_next_batch_needs_the_key_caps_each_annotator_and_releases(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc", max_claims_per_annotator=4)) as c:
        c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 12)}, headers=KEY)
        assert c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1000}).status_code == 401
        grab = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1000, "annotator": "greedy"}, headers=KEY).json()
        assert len(grab["documents"]) == 4  # not the whole pool of 12
        again = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 10, "annotator": "greedy"}, headers=KEY).json()
        assert again["documents"] == []  # the cap counts what is held
        anon = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1000}, headers=KEY).json()
        other = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1000, "annotator": "other"}, headers=KEY).json()
        assert len(anon["documents"]) == 4 and len(other["documents"]) == 4

        held = [d["id"] for d in grab["documents"]]
        r = c.post("/v1/al/release", json={"annotator": "greedy", "document_ids": held[:1]}, headers=KEY)
        assert r.status_code == 200 and r.json() == {"released": 1}
        assert len(c.post("/v1/al/next-batch", json={"strategy": "random", "size": 9, "annotator": "greedy"}, headers=KEY)
                   .json()["documents"]) == 1  # the released document went back to the pool, and one slot is free
        assert c.post("/v1/al/release", json={"claim_id": grab["claim_id"]}, headers=KEY).json() == {"released": 3}
        assert c.post("/v1/al/release", json={"annotator": ""}, headers=KEY).json() == {"released": 4}
        for body in ({}, {"claim_id": "x", "annotator": "y"}):
            r = c.post("/v1/al/release", json=body, headers=KEY)
            assert r.status_code == 400 and r.json()["extra"][0]["key"] == "claim_id"


def test_labels_empty_after_trimming_are_refused_and_stored_trimmed(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        for labels, key in (([" "], "labels[0]"), (["joy", "\t\n"], "labels[1]"), ([""], "labels[0]")):
            r = c.post("/v1/annotations", json={"document_id": "d", "labels": labels, "text": "a text"}, headers=KEY)
            assert r.status_code == 400 and key in [x["key"] for x in r.json()["extra"]], r.text
        r = c.post("/v1/annotations", json={"document_id": "d", "labels": ["  joy ", "joy", "love "], "text": "a text"}, headers=KEY)
        assert r.status_code == 200 and r.json()["labels"] == ["joy", "love"]
        assert [json.loads(x)["labels"] for x in c.get("/v1/annotations", headers=KEY).text.splitlines()] == [["joy", "love"]]
        assert c.get("/health/ready").json()["schema_version"] == "0006"
