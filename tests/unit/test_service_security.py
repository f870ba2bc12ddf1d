"""The service's defences, through the test client on the tiny model: what a request may cost (decoded length
counted, one predict call held to the budget), what an annotator's token may write (only pool documents it
may take, never another annotator's, never a round), text that must match its document, Label Studio
projects, next-batch taking turns with tagging, who may read what, the pages' headers, and the counts of the
progress view and of ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import KEY, fixture, pool_docs, running, settings_for

READ = {"X-API-Key": "r"}


def export(c: Any) -> dict[str, dict]:
    return {x["id"]: x for x in map(json.loads, c.get("/v1/annotations", headers=KEY).text.splitlines())}


def keys(r: Any) -> list[str]:
    return [x["key"] for x in r.json().get("extra") or []]


# ------------------------------------------------------------------------------ what a request costs


def test_sampling_is_priced_by_its_decoded_length(tiny_model_dir: Path, tmp_path: Path) -> None:
    """64 one-letter texts sampled 256 times at temperature 100 decode 64 x 256 full-length sequences: far
    more than a budget that counted only their three input tokens each (49,152) let through."""
    from xlgen.service.batcher import cut_chunks
    from xlgen.service.inference import text_work

    with running(settings_for(tiny_model_dir, tmp_path / "svc", max_texts=64, request_timeout_s=5.0)) as c:
        attack = {"texts": ["a"] * 64, "strategy": "sample", "num_samples": 256, "temperature": 100}
        r = c.post("/v1/tag", json=attack)
        assert r.status_code == 400 and keys(r) == ["num_samples"], r.text[:300]
        served = c.app.state.runtime.holder.current
        cfg = served.model.decoding.__class__(**{**served.model.decoding.__dict__, "strategy": "sample", "num_samples": 256})
        work = text_work(served.model, ["a"], cfg)
        assert work[0] >= 256 * cfg.max_new_tokens
        # a request under the budget is cut so that the chunk that runs when it times out is one text's samples
        settings = c.app.state.runtime.settings
        spans = cut_chunks(work * 8, settings.max_batch_size, settings.chunk_work)
        assert all(b - a == 1 or sum(work[:1]) * (b - a) <= settings.chunk_work for a, b in spans)


def test_one_predict_call_is_held_to_the_budget(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Label Studio sends every selected task in one body: the call as a whole costs what a tag request may."""
    with running(settings_for(tiny_model_dir, tmp_path / "svc", max_request_work=3_000)) as c:
        tasks = [{"id": i, "data": {"text": f"short task number {i}"}} for i in range(40)]  # 5 chunks of max_texts 8
        r = c.post("/predict", json={"tasks": tasks})
        assert r.status_code == 400 and keys(r) == ["tasks"] and "XLGEN_MAX_REQUEST_WORK" in r.text, r.text[:300]
        r = c.post("/predict", json={"tasks": tasks[:2]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2


# -------------------------------------------------------------------------- what a token may write


def test_a_token_annotates_only_what_it_may_take(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 6)}, headers=KEY)
        alice = {"X-API-Key": c.post("/v1/annotators", json={"name": "alice"}, headers=KEY).json()["token"]}
        bob = {"X-API-Key": c.post("/v1/annotators", json={"name": "bob"}, headers=KEY).json()["token"]}
        storage = c.app.state.runtime.storage

        # no document planted: the pool stays with the API key
        r = c.post("/v1/annotations", json={"document_id": "alice-injected", "text": "planted", "labels": ["joy"]}, headers=alice)
        assert r.status_code == 403 and keys(r) == ["text"], r.text
        assert storage.pool_size() == 6 and "alice-injected" not in export(c)

        # bob's claim holds: alice can neither annotate his document nor drop his claim
        (claimed,) = c.post("/v1/al/next-batch", json={"strategy": "random", "size": 1}, headers=bob).json()["documents"]
        r = c.post("/v1/annotations", json={"document_id": claimed["id"], "labels": ["anger"]}, headers=alice)
        assert r.status_code == 409 and keys(r) == ["document_id"] and "claimed" in r.text, r.text
        assert storage.claims_held("bob") == 1
        # bob's annotation holds: alice cannot overwrite it
        assert c.post("/v1/annotations", json={"document_id": claimed["id"], "labels": ["joy"]}, headers=bob).status_code == 200
        r = c.post("/v1/annotations", json={"document_id": claimed["id"], "labels": ["anger"]}, headers=alice)
        assert r.status_code == 409 and keys(r) == ["document_id"] and "bob" in r.text, r.text
        assert export(c)[claimed["id"]]["labels"] == ["joy"] and export(c)[claimed["id"]]["annotator"] == "bob"

        # an unclaimed pool document is hers to annotate, and to correct; a round is not hers to set
        free = next(d["id"] for d in pool_docs(tiny_data, 6) if d["id"] != claimed["id"])
        r = c.post("/v1/annotations", json={"document_id": free, "labels": ["joy"], "round": 7}, headers=alice)
        assert r.status_code == 403 and keys(r) == ["round"], r.text
        assert c.post("/v1/annotations", json={"document_id": free, "labels": ["joy"]}, headers=alice).status_code == 200
        assert c.post("/v1/annotations", json={"document_id": free, "labels": ["love"]}, headers=alice).json()["writes"] == 2
        assert {(k, v["round"]) for k, v in export(c).items()} == {(claimed["id"], 0), (free, 0)}

        # the API key still does all of it
        r = c.post("/v1/annotations", json={"document_id": "new", "text": "added by the key", "labels": ["joy"], "round": 3}, headers=KEY)
        assert r.status_code == 200
        assert c.post("/v1/annotations", json={"document_id": claimed["id"], "labels": ["x"], "annotator": "carol"},
                      headers=KEY).status_code == 200


# ------------------------------------------------------------------------ the text of a document


POOL_TEXT = "What a game, we watched the whole football match"


def test_a_different_text_for_a_known_document_is_409(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        c.post("/v1/pool", json={"documents": [{"id": "wh-1", "text": POOL_TEXT}]}, headers=KEY)
        event = fixture("annotation_created")
        event["task"]["data"] = {"id": "wh-1", "text": "I am furious"}
        event["annotation"]["result"][0]["value"]["choices"] = ["anger"]
        r = c.post("/webhook", json=event, headers=KEY)
        assert r.status_code == 409 and keys(r) == ["task.data.text"], r.text
        assert "wh-1" not in export(c)

        r = c.post("/v1/annotations", json={"document_id": "wh-1", "text": "I am furious", "labels": ["anger"]}, headers=KEY)
        assert r.status_code == 409 and keys(r) == ["text"], r.text
        assert "wh-1" not in export(c)
        # the same text is the same document
        event["task"]["data"]["text"] = POOL_TEXT
        assert c.post("/webhook", json=event, headers=KEY).status_code == 200
        assert export(c)["wh-1"]["text"] == POOL_TEXT

        # a bulk event stores what matches and names what does not
        bulk = fixture("annotations_created_bulk")
        bulk["task"][0]["data"] = {"id": "wh-1", "text": "another text"}
        r = c.post("/webhook", json=bulk, headers=KEY)
        assert r.status_code == 200, r.text
        assert [s["key"] for s in r.json()["skipped"]] == ["task[0].data.text"]
        assert [s["document_id"] for s in r.json()["stored"]] == ["ls-102", "ls-103"]


def test_events_of_an_unlisted_project_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc", labelstudio_projects="1,3")) as c:
        event = fixture("annotation_created")
        event["project"]["id"] = 2
        r = c.post("/webhook", json=event, headers=KEY)
        assert r.status_code == 403 and keys(r) == ["project"], r.text
        train = fixture("train")
        train["project"] = "2.1741083472"
        r = c.post("/train", json=train, headers=KEY)
        assert r.status_code == 403 and keys(r) == ["project"], r.text
        assert export(c) == {}
        event["project"]["id"] = 3
        assert c.post("/webhook", json=event, headers=KEY).status_code == 200


# ----------------------------------------------------------------- next-batch beside tagging


def test_a_capped_annotator_is_answered_without_scoring(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import xlgen.service.runtime as runtime

    calls: list[int] = []
    real = runtime.select_batch

    def counting(model: Any, pool: Any, *args: Any, **kw: Any) -> Any:
        calls.append(len(pool))
        return real(model, pool, *args, **kw)

    monkeypatch.setattr(runtime, "select_batch", counting)
    with running(settings_for(tiny_model_dir, tmp_path / "svc", max_claims_per_annotator=2)) as c:
        c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 8)}, headers=KEY)
        got = c.post("/v1/al/next-batch", json={"size": 5, "annotator": "ann"}, headers=KEY).json()["documents"]
        assert len(got) == 2 and calls
        calls.clear()
        again = c.post("/v1/al/next-batch", json={"size": 5, "annotator": "ann"}, headers=KEY)
        assert again.status_code == 200 and again.json()["documents"] == [] and calls == []


def test_next_batch_takes_turns_with_tagging(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    """A next-batch call scoring a pool of 256 documents and a one-text tag request sent just after it: the
    tag request is answered first, because the scoring runs in chunks that take turns with tag requests."""
    from xlgen.active.selection import SelectionConfig
    from xlgen.data import Document
    from xlgen.service.runtime import Runtime

    settings = settings_for(tiny_model_dir, tmp_path / "svc", chunk_work=4_000)
    texts = [json.loads(x)["text"] for x in (tiny_data / "train.jsonl").read_text().splitlines()[:256]]

    async def main() -> list[str]:
        rt = Runtime(settings)
        await rt.startup()
        try:
            while rt.holder.current is None:
                assert not rt.holder.error, rt.holder.error
                await asyncio.sleep(0.05)
            served = rt.holder.current
            await rt.tag(["warm up"], served.model.decoding)
            done: list[str] = []

            async def select() -> None:
                docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
                await rt.select(served, docs, SelectionConfig(strategy="margin", batch_size=4))
                done.append("select")

            async def tag() -> None:
                await asyncio.sleep(0.2)  # the scoring runs by now
                await rt.tag(["hello"], served.model.decoding)
                done.append("tag")

            await asyncio.gather(select(), tag())
            return done
        finally:
            await rt.shutdown()

    assert asyncio.run(main()) == ["tag", "select"]


def _lanes(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario, **settings: Any) -> list:
    """Runs ``scenario(rt, served)`` on a started runtime whose model calls are timed fakes: a sampling chunk or a
    pool piece takes 0.6 s, a beam call 0.02 s; returns ``(what, start, end)`` of every call."""
    from xlgen.service import runtime as runtime_module
    from xlgen.service.inference import Tagged
    from xlgen.service.runtime import Runtime

    calls: list = []
    real = runtime_module.run_tag_batch

    def timed(holder, decoding, texts, should_stop=None):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        time.sleep(0.6 if decoding.strategy == "sample" else 0.02)
        calls.append((decoding.strategy, t0, time.perf_counter()))
        return [Tagged(p.prediction, p.served) for p in real(holder, decoding.__class__(), texts)]

    def scan(self, piece, cfg):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        time.sleep(0.6)
        calls.append((f"scan {cfg.strategy}", t0, time.perf_counter()))
        return None

    monkeypatch.setattr(runtime_module, "run_tag_batch", timed)
    monkeypatch.setattr(Runtime, "_scan", scan)

    async def main() -> None:
        rt = Runtime(settings_for(tiny_model_dir, tmp_path / "svc", **settings))
        await rt.startup()
        try:
            while rt.holder.current is None:
                assert not rt.holder.error, rt.holder.error
                await asyncio.sleep(0.05)
            await scenario(rt, rt.holder.current)
        finally:
            await rt.shutdown()

    asyncio.run(main())
    return calls


@pytest.mark.parametrize("light_work", [4_096, 0])
def test_a_one_word_tag_does_not_wait_behind_a_sampling_flood(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               light_work: int) -> None:
    """Two heavy sampling requests of three one-text chunks each (0.6 s a chunk) and a one-word beam request sent
    while they run: on the light lane it is answered in well under a chunk's time; on one thread
    (``light_work=0``, as before the lane) it waits for the running chunk and for the other request's."""
    from xlgen.decoding import DecodingConfig

    latency: list[float] = []

    async def scenario(rt, served) -> None:  # type: ignore[no-untyped-def]
        heavy = DecodingConfig(strategy="sample", num_samples=64, temperature=100.0)

        async def light() -> None:
            await asyncio.sleep(0.3)  # both floods run by now
            t0 = time.perf_counter()
            await rt.tag(["hello"], served.model.decoding)
            latency.append(time.perf_counter() - t0)

        await asyncio.gather(rt.tag(["a"] * 3, heavy), rt.tag(["b"] * 3, heavy), light())

    calls = _lanes(tiny_model_dir, tmp_path, monkeypatch, scenario, chunk_work=1_000, light_work=light_work)
    assert sum(1 for c in calls if c[0] == "sample") == 6
    if light_work:
        assert latency[0] < 0.3, latency
    else:
        assert latency[0] > 0.5, latency  # what the lane removes


def test_sampling_never_takes_the_light_lane(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small sampling request (its work under the light lane's) still runs on the heavy thread, after the chunk that
    runs: sampling seeds the random generator, which two threads would share."""
    from xlgen.decoding import DecodingConfig

    async def scenario(rt, served) -> None:  # type: ignore[no-untyped-def]
        heavy = DecodingConfig(strategy="sample", num_samples=64, temperature=100.0)
        small = DecodingConfig(strategy="sample", num_samples=2)

        async def later() -> None:
            await asyncio.sleep(0.2)
            await rt.tag(["hi"], small)

        await asyncio.gather(rt.tag(["a"], heavy), later())

    calls = _lanes(tiny_model_dir, tmp_path, monkeypatch, scenario, chunk_work=1_000, light_work=1_000_000)
    first, second = calls
    assert second[1] >= first[2]  # one after the other, never at once


@pytest.mark.parametrize(("strategy", "overlap"), [("margin", True), ("beal", False)])
def test_dropout_scoring_holds_the_model_alone(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str,
                                               overlap: bool) -> None:
    """Next-batch scoring with dropout on (BEAL's passes) turns dropout on in the whole model: a light tag request
    waits for that piece; scoring without dropout (margin) runs beside it."""
    from xlgen.active.selection import SelectionConfig
    from xlgen.data import Document

    async def scenario(rt, served) -> None:  # type: ignore[no-untyped-def]
        async def light() -> None:
            await asyncio.sleep(0.2)
            await rt.tag(["hello"], served.model.decoding)

        docs = [Document(f"d{i}", f"text {i}") for i in range(4)]
        await asyncio.gather(rt.select(served, docs, SelectionConfig(strategy=strategy, batch_size=2)), light())

    calls = _lanes(tiny_model_dir, tmp_path, monkeypatch, scenario)
    scans = [c for c in calls if c[0].startswith("scan")]
    tag = next(c for c in calls if c[0] == "beam")
    assert scans
    assert any(s[1] < tag[1] < s[2] for s in scans) == overlap, calls


# ------------------------------------------------------------------------------ who reads what


def test_annotation_data_annotators_and_jobs_need_a_key(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc", read_key="r", train_data=str(tiny_data))) as c:
        c.post("/v1/annotations", json={"document_id": "d1", "text": "a secret text", "labels": ["joy"], "annotator": "alice"},
               headers=KEY)
        storage = c.app.state.runtime.storage
        job = storage.create_job({"force": False}, host="build-host")
        storage.update_job(job, status="running", pid=4242, pgid=4242, model_dir="/srv/secret/run/model", message="training",
                           detail="python -m xlgen.training.train --data /srv/secret/data")
        token = {"X-API-Key": c.post("/v1/annotators", json={"name": "alice"}, headers=KEY).json()["token"]}
        guarded = ["/v1/annotations", "/v1/annotations?history=true", "/v1/progress", f"/v1/jobs/{job}", "/v1/labels", "/v1/opinions",
                   "/v1/opinions/agreement", "/v1/label-space"]
        for path in guarded:
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 401, path
            assert c.get(path, headers=READ).status_code == 200, path
            assert c.get(path, headers=KEY).status_code == 200, path
        # a token reads what the annotation page shows, not the export or the jobs
        for path in ("/v1/progress", "/v1/labels", "/v1/label-space"):
            assert c.get(path, headers=token).status_code == 200, path
        for path in ("/v1/annotations", f"/v1/jobs/{job}", "/v1/opinions"):
            assert c.get(path, headers=token).status_code == 403, path
        # the read key writes nothing
        assert c.post("/v1/pool", json={"documents": [{"id": "x", "text": "y"}]}, headers=READ).status_code == 401
        assert c.post("/v1/annotations", json={"document_id": "d1", "labels": ["x"]}, headers=READ).status_code == 401
        # no server path, host, process or command line but to the API key
        for who in (None, READ, token):
            text = json.dumps([c.get("/v1/model", headers=who).json(), c.get("/v1/progress", headers=who).json(),
                               c.get(f"/v1/jobs/{job}", headers=READ).json()])
            for secret in (str(tiny_model_dir), "/srv/secret", "build-host", "4242", "xlgen.training.train"):
                assert secret not in text, (who, secret)
        full = c.get(f"/v1/jobs/{job}", headers=KEY).json()
        assert full["host"] == "build-host" and full["model_dir"] == "/srv/secret/run/model" and "--data" in full["detail"]
        assert c.get("/v1/model", headers=KEY).json()["path"] == str(tiny_model_dir)
        # tagging stays open (a setting), the health checks and the metrics too
        assert c.post("/v1/tag", json={"texts": ["still open"]}).status_code == 200
        assert c.get("/health/ready").status_code == 200 and c.get("/metrics").status_code == 200


def test_tagging_can_be_closed(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc", read_key="r", open_tagging=False)) as c:
        assert c.post("/v1/tag", json={"texts": ["closed"]}).status_code == 401
        assert c.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "closed"}}]}).status_code == 401
        assert c.post("/v1/tag", json={"texts": ["closed"]}, headers=READ).status_code == 200


def test_without_a_configured_key_the_service_makes_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc", api_key="")) as c:
        key_file = tmp_path / "svc" / "api_key"
        assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only
        made = {"X-API-Key": key_file.read_text().strip()}
        assert len(made["X-API-Key"]) >= 32
        assert c.post("/v1/pool", json={"documents": [{"id": "a", "text": "x"}]}).status_code == 401
        assert c.get("/v1/annotations").status_code == 401
        assert c.post("/v1/pool", json={"documents": [{"id": "a", "text": "x"}]}, headers=made).status_code == 200
        assert c.post("/v1/tag", json={"texts": ["tagging stays open"]}).status_code == 200
    with running(settings_for(tiny_model_dir, tmp_path / "svc", api_key="")) as c:  # a restart keeps it
        assert c.get("/v1/annotations", headers=made).status_code == 200


def test_pages_send_security_headers(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        for path in ("/annotate", "/progress", "/static/app.js", "/v1/model", "/nope"):
            r = c.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["x-frame-options"] == "DENY", path
        csp = c.get("/annotate").headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


def test_the_trainer_does_not_inherit_the_keys(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import xlgen.service.jobs as jobs

    seen: dict[str, str] = {}

    async def capture(*cmd: str, env: dict[str, str], **kw: Any) -> Any:
        seen.update(env)
        raise OSError("not started in this test")

    for name, value in (("XLGEN_API_KEY", "admin-secret"), ("XLGEN_READ_KEY", "read-secret"), ("XLGEN_LLM_KEY", "llm-secret")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(jobs.asyncio, "create_subprocess_exec", capture)
    with running(settings_for(tiny_model_dir, tmp_path / "svc", train_data=str(tiny_data), llm_key="llm-secret")) as c:
        job_id = c.post("/v1/retrain", json={}, headers=KEY).json()["id"]
        deadline = time.time() + 30
        while c.get(f"/v1/jobs/{job_id}", headers=KEY).json()["status"] in ("queued", "running"):
            assert time.time() < deadline
            time.sleep(0.05)
    assert seen and "PYTHONPATH" in seen
    assert not {"admin-secret", "read-secret", "llm-secret"} & set(seen.values())


# ------------------------------------------------------------------------------ counts


def test_progress_counts_documents_not_rounds(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 3)}, headers=KEY)
        for doc, round_ in (("p0", 0), ("p0", 1), ("p1", 0), ("p2", 0)):
            c.post("/v1/annotations", json={"document_id": doc, "labels": ["joy"], "round": round_, "annotator": "ann"}, headers=KEY)
        p = c.get("/v1/progress", headers=KEY).json()
        assert p["documents"] == 3 and [(a["annotator"], a["documents"]) for a in p["annotators"]] == [("ann", 3)]


def test_unmatched_routes_are_counted(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        assert c.get("/no/such/route").status_code == 404
        assert c.delete("/v1/tag").status_code == 405
        text = c.get("/metrics").text
        assert 'xlgen_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
        assert 'xlgen_http_requests_total{method="DELETE",route="unmatched",status="405"} 1.0' in text


# ------------------------------------------------------------------------------ what held


def test_static_paths_do_not_leave_their_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2f..%2fsettings.py", "/static/%2e%2e%2f%2e%2e%2fetc/passwd",
                     "/static//etc/passwd"):
            r = c.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "Settings" not in r.text and "root:" not in r.text


def test_tokens_are_stored_as_digests_and_keys_compared_in_constant_time(tiny_model_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import hmac

    with running(settings_for(tiny_model_dir, tmp_path / "svc", read_key="r")) as c:
        token = c.post("/v1/annotators", json={"name": "ann"}, headers=KEY).json()["token"]
        storage = c.app.state.runtime.storage
        t = storage.t["annotators"]
        with storage.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(t.select())]
        assert rows and all(token not in map(str, row) for row in rows)
        assert rows[0][1] == hashlib.sha256(token.encode()).hexdigest()
        compared: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def recording(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", recording)
        assert c.get("/v1/annotations", headers={"X-API-Key": "guess"}).status_code == 401
        assert {b for _, b in compared} == {b"k", b"r"}  # both keys, each through compare_digest
