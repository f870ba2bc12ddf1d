"""Second opinions end to end: the service on the tiny model asks a local HTTP server that speaks the OpenAI
chat-completions protocol (its answers set by each test), stores the ratings, lists them and measures their
agreement with annotations; and every way the endpoint can fail (slow, HTTP error, unparseable answer,
unreachable), the feature switched off, an unknown document and a request without the key."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support import KEY, pool_docs, running, settings_for
from xlgen.service.local import free_port

MODEL = "judge-7b"
LLM_KEY = "llm-secret"
TIMEOUT_S = 5.0  # the first call also imports the client and connects: 1 s was too short on a loaded 2-core machine


@dataclass
class Reply:
    """What the chat server answers next: a chat completion with ``content``, or an error ``status``, or ``raw``
    bytes, after ``delay_s`` seconds."""

    content: str = ""
    status: int = 200
    delay_s: float = 0.0
    raw: bytes | None = None


@dataclass
class ChatServer:
    """A chat-completions server on loopback that records every request it gets."""

    url: str = ""
    reply: Reply = field(default_factory=Reply)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, *ratings: dict[str, Any], fenced: bool = False) -> None:
        body = json.dumps({"labels": list(ratings)})
        self.reply = Reply(content=f"Here you go:\n```json\n{body}\n```" if fenced else body)


def _handler(chat: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            chat.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
            reply = chat.reply
            time.sleep(reply.delay_s)
            content_type = "application/json"
            if reply.raw is not None:
                payload, content_type = reply.raw, "text/html"
            elif reply.status != 200:
                payload = json.dumps({"error": {"message": "the model crashed", "type": "server_error"}}).encode()
            else:
                payload = json.dumps({
                    "id": f"chatcmpl-{len(chat.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                }).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the service gave up waiting
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    chat = ChatServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(chat))
    server.daemon_threads = True
    chat.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield chat
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def model_dir(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("opinions") / "model"
    shutil.copytree(trained_tiny_run / "model", dst)
    return dst


@pytest.fixture(scope="module")
def client(chat: ChatServer, model_dir: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = settings_for(model_dir, tmp_path_factory.mktemp("svc"), llm_url=chat.url, llm_model=MODEL, llm_key=LLM_KEY,
                            llm_timeout_s=TIMEOUT_S)
    with running(settings) as c:
        assert c.post("/v1/pool", json={"documents": pool_docs(tiny_data, 4)}, headers=KEY).status_code == 200
        yield c


@pytest.fixture(autouse=True)
def fresh(chat: ChatServer) -> None:
    chat.reply = Reply()
    chat.requests.clear()


def _ask(c: TestClient, document_id: str, labels: list[str], text: str | None = None, headers: dict | None = None) -> Any:
    body: dict[str, Any] = {"document_id": document_id, "labels": labels}
    if text is not None:
        body["text"] = text
    return c.post("/v1/opinions", json=body, headers=KEY if headers is None else headers)


def _stored(c: TestClient, document_id: str) -> list[dict[str, Any]]:
    r = c.get("/v1/opinions", params={"document_id": document_id}, headers=KEY)
    assert r.status_code == 200, r.text
    return r.json()["opinions"]


def test_an_opinion_is_asked_stored_and_listed(client: TestClient, chat: ChatServer, tiny_data: Path) -> None:
    text = pool_docs(tiny_data, 1)[0]["text"]
    chat.answer({"label": "joy", "relevance": 2, "explanation": "The text is happy."},
                {"label": "LOVE", "relevance": "1", "explanation": "Perhaps affection."},
                {"label": "surprise", "relevance": 2, "explanation": "Not asked about."}, fenced=True)
    r = _ask(client, "p0", ["joy", "love", "anger", "joy"])
    assert r.status_code == 200, r.text
    assert r.json() == {"document_id": "p0", "model": MODEL, "missing": ["anger"], "opinions": [
        {"label": "joy", "relevance": 2, "explanation": "The text is happy."},
        {"label": "love", "relevance": 1, "explanation": "Perhaps affection."}]}

    [sent] = chat.requests
    assert sent["path"] == "/v1/chat/completions" and sent["authorization"] == f"Bearer {LLM_KEY}"
    assert sent["body"]["model"] == MODEL and sent["body"]["temperature"] == 0
    system, user = sent["body"]["messages"]
    assert system["role"] == "system" and "relevance" in system["content"] and user["role"] == "user"
    assert text in user["content"] and all(f'- "{label}"' in user["content"] for label in ("joy", "love", "anger"))
    assert "Candidate labels (3)" in user["content"]  # the repeated label is asked about once

    stored = _stored(client, "p0")
    assert [(o["document_id"], o["label"], o["relevance"], o["explanation"], o["model"]) for o in stored] == [
        ("p0", "joy", 2, "The text is happy.", MODEL), ("p0", "love", 1, "Perhaps affection.", MODEL)]
    assert all(o["created_at"] > 0 for o in stored)
    assert {(o["document_id"], o["label"]) for o in client.get("/v1/opinions", headers=KEY).json()["opinions"]} >= {("p0", "joy"), ("p0", "love")}

    chat.answer({"label": "joy", "relevance": 0, "explanation": "On second thought, no."})
    assert _ask(client, "p0", ["joy"]).json()["missing"] == []
    assert [(o["label"], o["relevance"]) for o in _stored(client, "p0")] == [("joy", 0), ("love", 1)]  # a later one replaces
    assert _stored(client, "nobody") == []


def test_a_text_in_the_body_needs_no_pool_document_and_bad_bodies_are_400(client: TestClient, chat: ChatServer) -> None:
    chat.answer({"label": "joy", "relevance": 1})
    r = _ask(client, "outside", ["joy"], text="A text that is not in the pool.")
    assert r.status_code == 200 and r.json()["opinions"] == [{"label": "joy", "relevance": 1, "explanation": ""}]
    assert "A text that is not in the pool." in chat.requests[0]["body"]["messages"][1]["content"]
    for body, key in (({"document_id": "p1", "labels": []}, "labels"),
                      ({"document_id": "p1", "labels": [f"l{i}" for i in range(101)]}, "labels"),
                      ({"document_id": "p1", "labels": [" "]}, "labels[0]"),
                      ({"document_id": "p1", "labels": ["joy"], "text": "x" * 501}, "text"),
                      ({"document_id": "p1", "labels": ["joy"], "model": "other"}, "model")):
        r = client.post("/v1/opinions", json=body, headers=KEY)
        assert r.status_code == 400 and key in [x["key"] for x in r.json()["extra"]], (body, r.text)
    assert len(chat.requests) == 1
    assert client.get("/v1/opinions", params={"document_id": ""}, headers=KEY).status_code == 400


def test_agreement_with_the_latest_round_of_annotations(client: TestClient, chat: ChatServer) -> None:
    empty = client.get("/v1/opinions/agreement", headers=KEY).json()
    assert empty["n"] == 0 and empty["relevant"]["kappa"] is None and empty["by_relevance"][2] == {
        "relevance": 2, "count": 0, "chosen": 0, "share": None}

    chat.answer({"label": "joy", "relevance": 2, "explanation": "Happy."}, {"label": "love", "relevance": 1, "explanation": "Maybe."},
                {"label": "anger", "relevance": 0, "explanation": "Calm."}, {"label": "fear", "relevance": 0, "explanation": "No fear."})
    text = "I am thrilled, and a little scared of what comes next."
    assert _ask(client, "agree-1", ["joy", "love", "anger", "fear"], text=text).status_code == 200
    for round_, labels in ((0, ["anger"]), (1, ["joy", "fear"])):
        r = client.post("/v1/annotations", json={"document_id": "agree-1", "labels": labels, "round": round_, "text": text}, headers=KEY)
        assert r.status_code == 200, r.text

    got = client.get("/v1/opinions/agreement", headers=KEY).json()
    # pairs (relevance, chosen): joy (2, yes), love (1, no), anger (0, no), fear (0, yes)
    assert got["n"] == 4 and got["documents"] == 1
    # relevance >= 1 calls joy and love: accuracy 2/4, precision 1/2, recall 1/2; both raters say yes half the time: kappa 0
    assert got["relevant"] == {"min_relevance": 1, "accuracy": 0.5, "precision": 0.5, "recall": 0.5, "kappa": 0.0}
    # relevance == 2 calls joy only: accuracy 3/4, precision 1, recall 1/2; chance 1/4 * 1/2 + 3/4 * 1/2 = 1/2: kappa 1/2
    assert got["clearly_relevant"] == {"min_relevance": 2, "accuracy": 0.75, "precision": 1.0, "recall": 0.5, "kappa": 0.5}
    assert got["by_relevance"] == [{"relevance": 0, "count": 2, "chosen": 1, "share": 0.5},
                                   {"relevance": 1, "count": 1, "chosen": 0, "share": 0.0},
                                   {"relevance": 2, "count": 1, "chosen": 1, "share": 1.0}]


def test_a_slow_endpoint_is_504_and_nothing_is_stored(client: TestClient, chat: ChatServer) -> None:
    chat.reply = Reply(content=json.dumps({"labels": [{"label": "joy", "relevance": 2}]}), delay_s=TIMEOUT_S + 2)
    start = time.monotonic()
    r = _ask(client, "slow", ["joy"], text="Take your time.")
    assert r.status_code == 504 and chat.url in r.json()["detail"] and f"{TIMEOUT_S:g} s" in r.json()["detail"], r.text
    assert time.monotonic() - start < TIMEOUT_S + 1.5
    assert _stored(client, "slow") == []


@pytest.mark.parametrize(("reply", "says"), [
    (Reply(content="I am sorry, I cannot rate these labels."), "I am sorry, I cannot rate these labels."),
    (Reply(content='{"labels": [{"label": "joy", "relevance": "very"}]}'), "rates a candidate label 0, 1 or 2"),
    (Reply(content=""), "an empty message"),
    (Reply(status=500), "HTTP 500"),
    (Reply(status=429), "HTTP 429"),
    (Reply(raw=b"<html>bad gateway</html>"), "not a chat completion: '<html>bad gateway</html>'"),
], ids=["prose", "bad-relevance", "empty", "http-500", "http-429", "not-json"])
def test_a_failing_endpoint_is_502_and_nothing_is_stored(client: TestClient, chat: ChatServer, reply: Reply, says: str) -> None:
    chat.reply = reply
    r = _ask(client, "broken", ["joy"], text="Anything.")
    assert r.status_code == 502 and says in r.json()["detail"], r.text
    assert len(chat.requests) == 1 and _stored(client, "broken") == []


def test_an_unknown_document_without_text_is_404(client: TestClient, chat: ChatServer) -> None:
    r = _ask(client, "no-such-doc", ["joy"])
    assert r.status_code == 404 and "no-such-doc" in r.json()["detail"], r.text
    assert r.json()["extra"][0]["key"] == "document_id" and chat.requests == []


def test_asking_needs_the_key_or_an_annotators_token(client: TestClient, chat: ChatServer) -> None:
    assert _ask(client, "p1", ["joy"], headers={}).status_code == 401
    assert _ask(client, "p1", ["joy"], headers={"X-API-Key": "wrong"}).status_code == 401
    assert chat.requests == []
    token = client.post("/v1/annotators", json={"name": "ann"}, headers=KEY).json()["token"]
    chat.answer({"label": "joy", "relevance": 1})
    assert _ask(client, "p1", ["joy"], headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/v1/opinions", headers=KEY).status_code == 200 and client.get("/v1/opinions/agreement", headers=KEY).status_code == 200


@pytest.mark.parametrize(("llm_url", "status", "says"), [
    ("", 409, "XLGEN_LLM_URL"),
    ("closed", 502, "cannot be reached"),
], ids=["not-configured", "unreachable"])
def test_no_endpoint(model_dir: Path, tmp_path: Path, llm_url: str, status: int, says: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if llm_url == "closed" else llm_url
    with running(settings_for(model_dir, tmp_path / "svc", llm_url=url, llm_model=MODEL)) as c:
        r = _ask(c, "p0", ["joy"], text="Some text.")
        assert r.status_code == status and says in r.json()["detail"], r.text
        assert _stored(c, "p0") == []


def test_openapi_documents_the_routes_and_their_errors(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    ask = paths["/v1/opinions"]["post"]
    assert {"400", "401", "404", "409", "413", "415", "502", "504"} <= set(ask["responses"]) and ask["security"] == [{"apiKey": []}]
    assert "XLGEN_LLM_TIMEOUT_S" in ask["responses"]["504"]["description"]
    request = schema["components"]["schemas"]["OpinionRequest"]
    assert request["additionalProperties"] is False and request["properties"]["labels"]["maxItems"] == 100
    assert {"document_id"} <= {p["name"] for p in paths["/v1/opinions"]["get"]["parameters"]}
    assert paths["/v1/opinions/agreement"]["get"]["security"] == [{"apiKey": []}]  # reads of annotation data need a key
