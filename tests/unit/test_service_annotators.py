"""Annotators' tokens, the time spent per annotation, the progress view's numbers, label autocompletion,
and the pages themselves, through the test client."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import KEY, pool_docs, running, settings_for


def test_a_token_acts_as_its_annotator_and_only_where_annotators_may(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 8)}, headers=KEY)
        assert c.post("/v1/annotators", json={"name": "ann"}).status_code == 401  # tokens come from the key's holder
        r = c.post("/v1/annotators", json={"name": " "}, headers=KEY)
        assert r.status_code == 400 and r.json()["extra"][0]["key"] == "name"
        ann = {"X-API-Key": c.post("/v1/annotators", json={"name": "ann"}, headers=KEY).json()["token"]}
        bob = {"Authorization": "Bearer " + c.post("/v1/annotators", json={"name": "bob"}, headers=KEY).json()["token"]}

        assert c.get("/v1/whoami", headers=ann).json() == {"role": "annotator", "annotator": "ann", "auth_required": True}
        assert c.get("/v1/whoami", headers=KEY).json()["role"] == "admin"
        assert c.get("/v1/whoami", headers={"X-API-Key": "nope"}).status_code == 401

        got_a = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 3}, headers=ann).json()["documents"]
        got_b = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 3}, headers=bob).json()["documents"]
        assert len(got_a) == 3 and len(got_b) == 3 and not {d["id"] for d in got_a} & {d["id"] for d in got_b}
        r = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1, "annotator": "bob"}, headers=ann)
        assert r.status_code == 403 and r.json()["extra"][0]["key"] == "annotator"  # a token cannot act as another

        r = c.post("/v1/annotations", json={"document_id": got_a[0]["id"], "labels": ["joy"], "seconds": 4.25}, headers=ann)
        assert r.status_code == 200 and r.json()["annotator"] == "ann" and r.json()["seconds"] == 4.25
        r = c.post("/v1/annotations", json={"document_id": got_a[1]["id"], "labels": ["joy"], "seconds": -1}, headers=ann)
        assert r.status_code == 400 and r.json()["extra"][0]["key"] == "seconds"
        line = json.loads(c.get("/v1/annotations", headers=KEY).text.splitlines()[0])
        assert line["annotator"] == "ann" and line["seconds"] == 4.25

        # a token releases only its own annotator's claims, even with another's claim id
        claim_b = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1}, headers=bob).json()["claim_id"]
        assert c.post("/v1/al/release", json={"claim_id": claim_b}, headers=ann).json() == {"released": 0}
        assert c.post("/v1/al/release", json={"claim_id": claim_b}, headers=bob).json() == {"released": 1}

        # what stays with the key: retraining, swapping, the pool, tokens
        assert c.post("/v1/retrain", json={}, headers=ann).status_code == 401
        assert c.put("/v1/model", json={"job_id": "x"}, headers=ann).status_code == 401
        assert c.post("/v1/pool", json={"documents": [{"id": "z", "text": "t"}]}, headers=ann).status_code == 401
        assert c.post("/v1/annotators", json={"name": "eve"}, headers=ann).status_code == 401

        # a new token replaces the old one
        old = ann
        c.post("/v1/annotators", json={"name": "ann"}, headers=KEY)
        assert c.get("/v1/whoami", headers=old).status_code == 401


def test_progress_counts_per_annotator_and_lists_jobs(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 6)}, headers=KEY)
        for doc, who, s in (("p0", "ann", 3.0), ("p1", "ann", 5.0), ("p2", "ann", 10.0), ("p3", "bob", None)):
            body = {"document_id": doc, "labels": ["joy"], "annotator": who} | ({"seconds": s} if s is not None else {})
            assert c.post("/v1/annotations", json=body, headers=KEY).status_code == 200
        c.post("/v1/annotations", json={"document_id": "p0", "labels": ["love"], "annotator": "ann", "seconds": 1.0}, headers=KEY)
        storage = c.app.state.runtime.storage
        job = storage.create_job({"force": False})
        storage.finish_job(job, "succeeded", metrics={"dev_micro_f1": 0.5, "dev_macro_f1": 0.25}, swapped=True,
                           progress={"train_docs": {"total": 404}})
        p = c.get("/v1/progress", headers=KEY).json()
        assert p["documents"] == 4 and p["pool_size"] == 6 and p["questions"] == 0
        rows = {a["annotator"]: a for a in p["annotators"]}
        assert rows["ann"]["documents"] == 3 and rows["bob"]["documents"] == 1
        assert rows["ann"]["median_seconds"] == 5.0 and rows["ann"]["total_seconds"] == 16.0  # p0's last write took 1 s
        assert rows["bob"]["median_seconds"] is None
        assert [(j["id"], j["dev_micro_f1"], j["dev_macro_f1"], j["train_docs"], j["swapped"]) for j in p["jobs"]] == [
            (job, 0.5, 0.25, 404, True)]
        assert p["model_version"] and p["model_path"] == str(tiny_model_dir)


def test_label_space_autocompletes_prefix_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        r = c.get("/v1/label-space", params={"q": "AD"}, headers=KEY).json()
        assert r["labels"] == ["admiration", "sadness"]  # case-blind; the prefix match first, then the match inside
        assert r["total"] == 2 and c.get("/v1/label-space", headers=KEY).json()["total"] == 27  # matches, before the limit
        assert len(c.get("/v1/label-space", params={"limit": 3}, headers=KEY).json()["labels"]) == 3
        assert c.get("/v1/label-space", params={"limit": 0}, headers=KEY).status_code == 400


def test_the_pages_are_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        r = c.get("/", follow_redirects=False)
        assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/annotate"
        page = c.get("/annotate")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="signin-form"' in page.text and 'data-auth-required="true"' in page.text
        assert 'data-second-opinion="false"' in page.text  # no chat endpoint configured
        assert 'id="plot"' in c.get("/progress").text
        js = c.get("/static/app.js")
        assert js.status_code == 200 and "/v1/al/next-batch" in js.text
        assert c.get("/static/page.css").status_code == 200
        assert "/annotate" not in c.get("/schema/openapi.json").json()["paths"]


def test_yes_answers_become_training_labels(tiny_data: Path, tmp_path: Path) -> None:
    from xlgen.data import read_documents
    from xlgen.service.jobs import build_train_file
    from xlgen.service.storage import PoolDocument, Storage

    storage = Storage(f"sqlite:///{tmp_path / 'x.db'}")
    storage.add_documents([PoolDocument("a", "python code bug"), PoolDocument("b", "java code error"), PoolDocument("c", "oil price")])
    storage.annotate("a", ["annoyance"], 0, "ann")
    storage.add_new_label("programming", None, [])
    storage.add_questions("programming", [("a", 0.9), ("b", 0.8), ("c", 0.1)])
    assert storage.answer_question("a", "programming", True, "ann", 2.0)
    assert storage.answer_question("b", "programming", True, "bob", 3.0)
    assert storage.answer_question("c", "programming", False, "bob", 1.0)
    counts = build_train_file(storage, str(tiny_data), tmp_path / "train.jsonl")
    docs = {d.id: d.labels for d in read_documents(tmp_path / "train.jsonl")}
    assert docs["a"] == ("annoyance", "programming") and docs["b"] == ("programming",) and "c" not in docs
    assert counts == {"base": 400, "annotated": 2, "positives": 2, "total": 402}
    storage.close()
