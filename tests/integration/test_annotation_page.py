"""The annotation page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against the service started as a server process, two annotators signed in at once.

It clicks through sign-in, a suggestion rejected and a label added through autocompletion, keyboard
submission and skipping, a new label added by name whose questions two annotators answer, and the progress
view with a retraining started by the key's holder and swapped in. ``XLGEN_SCREENSHOTS=DIR`` keeps the
screenshots there (the README's come from this test). Without the browser the test skips, or fails where
``CI`` or ``XLGEN_REQUIRE_BROWSER`` is set (``scripts/setup.sh`` installs it when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support import start_server
from xlgen.data import read_documents, write_jsonl
from xlgen.digests import encoder_digest
from xlgen.encoders.packaged import packaged_model_dir
from xlgen.service.local import free_port
from xlgen.service.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
KEY = "page-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
EXAMPLES = ["I am starving, let's get pizza", "this pasta dinner was delicious", "we cooked tacos for lunch"]
TEXTS = [
    "Thank you so much, this really helped me out today", "I can't believe they cancelled the show, so disappointing",
    "Wow, I did not see that ending coming at all", "This is the funniest thing I have read all week",
    "I'm really worried about my exam tomorrow", "Congratulations on the new job, you earned it!",
    "Why does this keep happening every single time?", "I love how kind everyone in this thread is",
    "Honestly I'm not sure what to think about this", "That was a really thoughtful thing to do for her",
    "I'm so sorry for your loss, sending hugs", "Ugh, the train is late again and I'm stuck here",
    "Can someone explain how this actually works?", "I'm proud of how far you have come this year",
    "That movie was boring, I almost fell asleep", "I miss the old days when we all lived nearby",
    "What a beautiful photo, the colours are amazing", "I hope things get better for you soon",
    "This game update broke everything, great job devs", "I finally finished the marathon, so happy right now",
    "Nobody told me the meeting moved, annoying", "I'm curious what the second season will be about",
    "Thanks for the advice, I will try that tomorrow", "It is what it is, not much we can do now",
]
FOOD = [
    "I could eat this pizza every single day", "the pasta at that place is amazing", "best burger I ever had",
    "lunch was tacos and it made my day", "we cooked dinner together and it was delicious", "breakfast pancakes are the best",
]


def _browser_or_skip() -> None:
    if CHROMIUM and DRIVER:
        return
    reason = "needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as root)"
    if os.environ.get("CI") or os.environ.get("XLGEN_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


class _Judge(BaseHTTPRequestHandler):
    """A chat-completions endpoint on loopback standing in for the second-opinion model: it rates the first
    candidate label of the prompt 2 and every other 0, so the page's opinion column can be checked label by label."""

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        user = body["messages"][-1]["content"]
        listed = user.split("Candidate labels", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        labels = [json.loads(line[2:]) for line in listed if line.startswith("- ")]
        ratings = [{"label": x, "relevance": 2 if i == 0 else 0, "explanation": f"the judge on {x}"} for i, x in enumerate(labels)]
        payload = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                              "choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": json.dumps({"labels": ratings})}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A retrieval model (tiny T5, the packaged all-MiniLM-L6-v2 sentence encoder) served by a server process
    with an API key and a training folder, its pool holding short comments and a few about food."""
    _browser_or_skip()
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    root = tmp_path_factory.mktemp("page")
    mp = pytest.MonkeyPatch()
    mp.setenv("XLGEN_CACHE_DIR", str(root / "cache"))  # embeddings of this test's texts stay with it
    encoder = "all-MiniLM-L6-v2"  # the packaged weights: a new label's documents are found by meaning
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 300), ("dev", 50), ("test", 50)):
        write_jsonl(read_documents(ROOT / "data" / "goemotions" / f"{split}.jsonl.gz")[:n], data / f"{split}.jsonl")
    args = ["--preset", "tiny", "--variant", "retrieval", "--encoder", encoder, "--candidates-in-input", "4",
            "--max-target-length", "16", "--max-input-length", "64", "--batch-size", "16", "--lr", "3e-2", "--threads", "1"]
    run(TrainConfig(data=str(data), output_dir=str(root / "run"), preset="tiny", max_steps=12, eval_every=12, batch_size=16,
                    lr=3e-2, max_target_length=16, max_input_length=64, progress=False, variant="retrieval",
                    encoder=encoder, candidates_in_input=4))
    judge = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    port = free_port()
    env = {"XLGEN_API_KEY": KEY, "XLGEN_TRAIN_DATA": str(data), "XLGEN_RETRAIN_ARGS": " ".join([*args, "--max-steps", "6"]),
           "XLGEN_NEW_LABEL_QUESTIONS": "6", "XLGEN_CACHE_DIR": str(root / "cache"),
           "XLGEN_LLM_URL": f"http://127.0.0.1:{judge.server_address[1]}/v1", "XLGEN_LLM_MODEL": "judge"}
    proc = start_server(root / "run" / "model", root / "svc", port, root / "server.log", **env)
    base = f"http://127.0.0.1:{port}"
    admin = {"X-API-Key": KEY}
    pool = [{"id": f"doc{i}", "text": t} for i, t in enumerate(TEXTS)] + [{"id": f"food{i}", "text": t} for i, t in enumerate(FOOD)]
    assert httpx.post(f"{base}/v1/pool", json={"documents": pool}, headers=admin).status_code == 200
    tokens = {name: httpx.post(f"{base}/v1/annotators", json={"name": name}, headers=admin).json()["token"] for name in ("alice", "bob")}
    try:
        yield {"base": base, "tokens": tokens, "root": root, "db": f"sqlite:///{root / 'svc' / 'xlgen.db'}"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        judge.shutdown()
        mp.undo()


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browsers(server: dict) -> Iterator[tuple]:
    a, b = _driver(), _driver()
    try:
        yield a, b
    finally:
        a.quit()
        b.quit()


def _shots(server: dict) -> Path:
    out = Path(os.environ["XLGEN_SCREENSHOTS"]) if os.environ.get("XLGEN_SCREENSHOTS") else server["root"] / "shots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait(driver, condition, what, timeout: float = 30.0):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # the page re-renders tables while the condition reads them: a stale element means "look again"
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)
    except Exception:
        status = driver.find_element("id", "status").text
        detail = what() if callable(what) else what
        raise AssertionError(f"{detail} (status bar: {status!r})") from None


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _sign_in(driver, base: str, name: str, key: str) -> None:
    driver.get(f"{base}/annotate")
    _wait(driver, lambda d: d.find_element("id", "signin-panel").is_displayed(), "the sign-in form shows")
    driver.find_element("id", "signin-name").send_keys(name)
    driver.find_element("id", "signin-key").send_keys(key)
    driver.find_element("id", "signin").click()
    _wait(driver, lambda d: d.find_element("id", "main").is_displayed(), f"{name} is signed in")


def _current_doc(driver) -> str:
    _wait(driver, lambda d: d.find_element("id", "doc").is_displayed() and _text(d, "doc-id"), "a document shows")
    return _text(driver, "doc-id")


def _claims(server: dict) -> dict[str, set[str]]:
    storage = Storage(server["db"])
    try:
        c = storage.t["claims"]
        with storage.engine.connect() as conn:
            rows = conn.execute(c.select().where(c.c.expires_at >= time.time())).all()
    finally:
        storage.close()
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r.annotator, set()).add(r.document_id)
    return out


def _export(server: dict) -> dict[str, dict]:
    return {x["id"]: x for x in map(json.loads, httpx.get(server["base"] + "/v1/annotations", headers={"X-API-Key": KEY}).text.splitlines())}


def test_two_annotators_label_add_labels_answer_questions_and_follow_progress(server: dict, browsers: tuple) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    alice, bob = browsers
    base, shots = server["base"], _shots(server)
    wrong = _driver()
    try:  # a wrong token is refused and says so
        wrong.get(f"{base}/annotate")
        wrong.find_element("id", "signin-key").send_keys("not-a-token")
        wrong.find_element("id", "signin").click()
        _wait(wrong, lambda d: "401" in _text(d, "status"), "a wrong token is refused")
        assert not wrong.find_element("id", "main").is_displayed()
    finally:
        wrong.quit()

    _sign_in(alice, base, "", server["tokens"]["alice"])
    _sign_in(bob, base, "", server["tokens"]["bob"])
    assert _text(alice, "who") == "alice (annotator)" and _text(bob, "who") == "bob (annotator)"

    # two annotators at once never get the same document
    first_a, first_b = _current_doc(alice), _current_doc(bob)
    held = _claims(server)
    assert held["alice"] and held["bob"] and not held["alice"] & held["bob"], held
    assert first_a in held["alice"] and first_b in held["bob"]

    # alice: suggestions with scores and sources; reject the first with its key, add a label through autocompletion
    rows = alice.find_elements(By.CSS_SELECTOR, "#suggestions tbody tr")
    assert rows, "the model suggests labels"
    suggested = [r.get_attribute("data-label") for r in rows]
    assert all(r.find_elements(By.CSS_SELECTOR, ".src") for r in rows)  # which source proposed each
    alice.find_element(By.TAG_NAME, "body").send_keys("1")
    _wait(alice, lambda d: "rejected" in d.find_elements(By.CSS_SELECTOR, "#suggestions tbody tr")[0].get_attribute("class"),
          "key 1 rejects the first suggestion")
    extra = next(x for x in ("gratitude", "curiosity", "remorse") if x not in suggested)
    box = alice.find_element("id", "add-label")
    box.send_keys(extra[:4])
    _wait(alice, lambda d: [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#label-options option")] == [extra],
          f"autocompletion offers {extra}")
    box.clear()
    box.send_keys(extra, Keys.ENTER)
    _wait(alice, lambda d: d.find_elements(By.CSS_SELECTOR, f"#added [data-label='{extra}']"), f"{extra} is added")
    # O asks the chat model for a second opinion: each suggestion's row shows its rating and explanation
    alice.find_element(By.TAG_NAME, "body").send_keys("o")
    _wait(alice, lambda d: [c.text for c in d.find_elements(By.CSS_SELECTOR, "#suggestions tbody td.opinion")]
          == [f"{2 if i == 0 else 0} · the judge on {x}" for i, x in enumerate(suggested)], "the second opinions show")
    assert "second opinion from judge" in _text(alice, "status")
    stored = httpx.get(f"{base}/v1/opinions", params={"document_id": first_a}, headers={"X-API-Key": KEY}).json()
    assert {(o["label"], o["relevance"]) for o in stored["opinions"]} == {(x, 2 if i == 0 else 0) for i, x in enumerate([*suggested, extra])}
    alice.save_screenshot(str(shots / "annotate.png"))
    time.sleep(0.3)  # a measurable time on the document
    alice.find_element("id", "submit").click()
    _wait(alice, lambda d: _text(d, "count-mine") == "1" and _text(d, "doc-id") != first_a, "the count goes to 1 and the next document shows")
    saved = _export(server)[first_a]
    assert saved["annotator"] == "alice" and saved["seconds"] >= 0.3
    assert saved["labels"] == [*suggested[1:], extra]  # the first suggestion rejected, the others kept, the added one last

    # keyboard: A accepts all, Enter submits; bob skips with S and gets another document
    second_a = _text(alice, "doc-id")
    body = alice.find_element(By.TAG_NAME, "body")
    body.send_keys("a")
    body.send_keys(Keys.ENTER)
    _wait(alice, lambda d: _text(d, "count-mine") == "2", "Enter submits")
    assert _export(server)[second_a]["annotator"] == "alice"
    bob.find_element(By.TAG_NAME, "body").send_keys("s")
    _wait(bob, lambda d: _text(d, "doc-id") not in ("", first_b), "S skips to another document")
    assert first_b not in _claims(server).get("bob", set())  # the skipped document went back to the pool

    # a new label by name: its most similar documents become questions, answered by both at once
    alice.find_element(By.TAG_NAME, "body").send_keys("q")
    _wait(alice, lambda d: d.find_element("id", "questions").is_displayed(), "Q opens the questions")
    alice.find_element(By.CSS_SELECTOR, "#new-label-box summary").click()
    alice.find_element("id", "new-label-name").send_keys("food")
    alice.find_element("id", "new-label-description").send_keys("eating, meals and dishes")
    alice.find_element("id", "new-label-examples").send_keys("\n".join(EXAMPLES))
    alice.find_element("id", "new-label-submit").click()
    _wait(alice, lambda d: d.find_element("id", "question").is_displayed() and _text(d, "question-label") == "food",
          "a question about food shows")
    bob.find_element(By.TAG_NAME, "body").send_keys("q")
    _wait(bob, lambda d: d.find_element("id", "question").is_displayed(), "bob gets a question too")
    qa, qb = _text(alice, "question-doc"), _text(bob, "question-doc")
    assert qa != qb  # never the same question twice
    # the retriever ranks the food texts first among the 30: the yes below is a true positive, found through the page
    assert _text(alice, "question-text") in FOOD and _text(bob, "question-text") in FOOD
    alice.save_screenshot(str(shots / "question.png"))
    alice.find_element("id", "answer-yes").click()
    _wait(alice, lambda d: [c.text for c in d.find_elements(By.CSS_SELECTOR, "#new-labels tr[data-label='food'] td")][3:] == ["1"],
          lambda: "one positive for food: " + alice.find_element("id", "new-labels").get_attribute("outerHTML"))
    bob.find_element(By.TAG_NAME, "body").send_keys("n")
    _wait(bob, lambda d: _text(d, "question-doc") != qb or d.find_element("id", "question-empty").is_displayed(), "N answers no")
    food = next(x for x in httpx.get(base + "/v1/labels", headers={"X-API-Key": KEY}).json()["labels"] if x["name"] == "food")
    assert food["positives"] == 1 and food["answered"] == 2
    answers = {(a["document_id"], a["annotator"]): a["answer"] for a in _answers(server)}
    assert answers[(qa, "alice")] is True and answers[(qb, "bob")] is False
    assert food["questions"] == 6

    # progress: per-annotator counts; the key's holder starts a retraining and the plot gets its point
    admin = _driver()
    try:
        admin.get(f"{base}/progress")
        admin.find_element("id", "signin-name").send_keys("lead")
        admin.find_element("id", "signin-key").send_keys(KEY)
        admin.find_element("id", "signin").click()
        _wait(admin, lambda d: d.find_elements(By.CSS_SELECTOR, "#p-annotators tr[data-annotator='alice']"), "alice is listed")
        cells = admin.find_element(By.CSS_SELECTOR, "#p-annotators tr[data-annotator='alice']").find_elements(By.TAG_NAME, "td")
        assert [c.text for c in cells[:4]] == ["alice", "2", "1", "1"]
        assert _text(admin, "p-documents") == "2"
        labels_before = httpx.get(base + "/v1/model").json()["label_count"]
        before_version = httpx.get(base + "/v1/model").json()["version"]
        admin.find_element("id", "retrain-force").click()
        admin.find_element("id", "retrain").click()
        _wait(admin, lambda d: d.find_elements(By.CSS_SELECTOR, "#p-jobs tbody tr"), "the job is listed")
        _wait(admin, lambda d: d.find_element(By.CSS_SELECTOR, "#p-jobs tbody tr .job-status").text in ("succeeded", "failed"),
              "the retraining finishes", timeout=300)
        job = admin.find_element(By.CSS_SELECTOR, "#p-jobs tbody tr")
        assert job.find_element(By.CSS_SELECTOR, ".job-status").text == "succeeded", _server_log(server)
        # the answers were learned by the encoder too (yes: a pair, no: a hard negative), and the model carries it
        first = httpx.get(base + "/v1/jobs/" + job.get_attribute("data-job"), headers={"X-API-Key": KEY}).json()
        retriever = Path(first["model_dir"]) / "guidance" / "retriever"
        meta = json.loads((retriever / "retriever.json").read_text())
        assert meta["encoder"]["bundled"] == "encoder" and (retriever / "encoder" / "modules.json").is_file()
        assert meta["encoder"]["digest"] != encoder_digest(packaged_model_dir())
        assert [json.loads(x)["answer"] for x in (Path(first["model_dir"]).parents[1] / "answers.jsonl").read_text().splitlines()] \
            == [True, False]
        _wait(admin, lambda d: d.find_elements(By.CSS_SELECTOR, "#plot circle.dev_micro_f1"), "the plot shows the job's dev micro-F1")
        # a second retraining, not forced: a better model is swapped in at once, a worse one waits for the Swap in button
        admin.find_element("id", "retrain-force").click()
        admin.find_element("id", "retrain").click()
        _wait(admin, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#plot circle.dev_micro_f1")) == 2, "the second job's point", timeout=300)
        second = httpx.get(base + "/v1/progress", headers={"X-API-Key": KEY}).json()["jobs"][-1]
        assert second["status"] == "succeeded", _server_log(server)
        if not second["swapped"]:
            _wait(admin, lambda d: d.find_elements(By.CSS_SELECTOR, f"#p-jobs tr[data-job='{second['id']}'] button.swap"), "Swap in offered")
            admin.find_element(By.CSS_SELECTOR, f"#p-jobs tr[data-job='{second['id']}'] button.swap").click()
            _wait(admin, lambda d: "409" in _text(d, "status") and "worse" in _text(d, "status"), "a worse model is refused")
        assert httpx.get(base + "/v1/model").json()["version"] != before_version
        admin.set_window_size(1280, 1250)
        admin.save_screenshot(str(shots / "progress.png"))
    finally:
        admin.quit()
    # the retrained model, swapped in, learned the new label from the page's yes: one label more in its label space
    served = httpx.get(base + "/v1/model").json()
    assert served["label_count"] == labels_before + 1, (served, labels_before)


def _answers(server: dict) -> list[dict]:
    storage = Storage(server["db"])
    try:
        return storage.answers()
    finally:
        storage.close()


def _server_log(server: dict) -> str:
    return (server["root"] / "server.log").read_text()[-3000:]
