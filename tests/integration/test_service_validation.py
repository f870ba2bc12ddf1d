"""Every bad input is a 4xx naming what is wrong, never a 5xx: encodings, nesting, numbers beyond
what storage and decoding take, strict types, content types, size limits on every route, the
work budget of tagging; and the OpenAPI document states all of it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from tests.support import KEY, running, settings_for
from xlgen.service.schemas import VISIBLE

BODY_ROUTES = [("post", "/v1/tag"), ("post", "/v1/pool"), ("post", "/v1/al/next-batch"), ("post", "/v1/annotations"),
               ("post", "/v1/retrain"), ("put", "/v1/model"), ("post", "/predict"), ("post", "/setup"), ("post", "/webhook")]
JSON = {"content-type": "application/json", **KEY}
LONG = "word " * 90  # more tokens than the tiny model's 48 input tokens, fewer characters than the test limit of 500


@pytest.fixture()
def client(tiny_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with running(settings_for(tiny_model_dir, tmp_path / "svc")) as c:
        yield c


def keys(response: Any) -> list[str]:
    return [x["key"] for x in response.json().get("extra") or []]


def send(c: TestClient, method: str, path: str, content: bytes, headers: dict[str, str] = JSON) -> Any:
    return c.request(method.upper(), path, content=content, headers=headers)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_broken_bodies_are_400_on_every_route(client: TestClient, method: str, path: str) -> None:
    for body, problem in [(b'{"texts": ["\xff\xfe"]}', "UTF-8"), (b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b"}", "deep"),
                          (b"[" * 1000 + b"]" * 1000, "deep"), (b'{"x": "a\\u0000b"}', "NUL"), (b"{not json", "malformed"),
                          (b"", "empty")]:
        r = send(client, method, path, body)
        assert r.status_code == 400, (body[:20], r.text)
        assert problem in r.json()["detail"] and r.json()["extra"][0]["key"] in ("body", "x"), r.text


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_only_json_bodies_are_read(client: TestClient, method: str, path: str) -> None:
    """A form posted from another site (or text/plain) never reaches a handler: 415."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/json; charset=latin-1", ""):
        r = send(client, method, path, b"{}", {"content-type": content_type, **KEY})
        assert r.status_code == 415, (content_type, r.text)
        assert keys(r) == ["content-type"] and r.json()["status_code"] == 415


def test_a_form_post_cannot_start_a_retraining(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A page on another site can post a form or text/plain to the service (no CORS preflight for those), and a
    browser may add credentials it holds: even with the key such a body must not reach the retraining handler."""
    with running(settings_for(tiny_model_dir, tmp_path / "svc", train_data=str(tiny_data))) as c:
        started: list[dict] = []

        async def start(params: dict) -> str:
            started.append(params)
            raise RuntimeError("no retraining in this test")

        monkeypatch.setattr(c.app.state.runtime.jobs, "start", start)
        for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
            assert c.post("/v1/retrain", content=b"{}", headers={"content-type": content_type, **KEY}).status_code == 415
        assert started == []
        ok = c.post("/v1/tag", content=b'{"texts": ["hi"]}', headers={"content-type": "application/json; charset=UTF-8"})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "key"),
    [
        ("post", "/v1/al/next-batch", {"size": "10"}, "size"),
        ("post", "/v1/tag", {"texts": ["a"], "threshold": "0.5"}, "threshold"),
        ("post", "/v1/tag", {"texts": ["a"], "keep_new_labels": "true"}, "keep_new_labels"),
        ("post", "/v1/annotations", {"document_id": "d", "labels": ["x"], "text": "t", "round": "1"}, "round"),
        ("put", "/v1/model", {"job_id": "x", "force": "true"}, "force"),
        ("post", "/v1/retrain", {"max_steps": "3"}, "max_steps"),
        ("post", "/v1/pool", {"documents": [{"id": 5, "text": "t"}]}, "documents[0].id"),
    ],
)
def test_strings_are_not_coerced(client: TestClient, method: str, path: str, body: dict, key: str) -> None:
    r = getattr(client, method)(path, json=body, headers=KEY)
    assert r.status_code == 400 and keys(r) == [key], r.text


def test_an_integral_float_is_an_integer(client: TestClient) -> None:
    """JSON Schema counts 10.0 as an integer; so does the service."""
    r = client.post("/v1/al/next-batch", json={"size": 2.0}, headers=KEY)
    assert r.status_code == 200, r.text
    assert client.post("/v1/al/next-batch", json={"size": 2.5}, headers=KEY).status_code == 400


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"document_id": "d", "labels": ["x"], "text": "t", "round": 2**70}, "round"),
        ({"document_id": "d", "labels": ["x"], "text": "t", "round": 2**31}, "round"),  # PostgreSQL's INTEGER
        ({"document_id": "d", "labels": ["x"], "text": "t", "round": -1}, "round"),
        ({"document_id": "d" * 257, "labels": ["x"], "text": "t"}, "document_id"),
        ({"document_id": "d", "labels": ["x" * 257], "text": "t"}, "labels[0]"),
        ({"document_id": "d", "labels": ["x"] * 1001, "text": "t"}, "labels"),
        ({"document_id": "d", "labels": ["x"], "text": "t", "annotator": "a" * 257}, "annotator"),
        ({"document_id": "d", "labels": ["x"], "text": "a" * 501}, "text[0]"),
    ],
)
def test_annotation_limits(client: TestClient, body: dict, key: str) -> None:
    r = client.post("/v1/annotations", json=body, headers=KEY)
    assert r.status_code == 400 and keys(r) == [key], r.text


def test_round_in_the_query(client: TestClient) -> None:
    for value in (str(2**70), str(2**31), "-1", "x"):
        r = client.get("/v1/annotations", params={"round": value}, headers=KEY)
        assert r.status_code == 400 and keys(r) == ["round"], (value, r.text)
    assert client.get("/v1/annotations", params={"round": "0"}, headers=KEY).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "key"),
    [
        ("post", "/v1/tag", {"texts": [{"id": "i" * 257, "text": "t"}]}, "texts[0].id"),
        ("post", "/v1/pool", {"documents": [{"id": "i" * 257, "text": "t"}]}, "documents[0].id"),
        ("post", "/v1/pool", {"documents": [{"id": "i", "text": "t" * 501}]}, "documents[0]"),
        ("post", "/v1/pool", {"documents": [{"id": "i", "text": " "}]}, "documents[0].text"),
        ("post", "/v1/al/next-batch", {"annotator": "a" * 257}, "annotator"),
        ("post", "/v1/al/next-batch", {"strategy": "s" * 65}, "strategy"),
        ("put", "/v1/model", {"job_id": "j" * 65}, "job_id"),
        ("post", "/v1/retrain", {"preset": "p" * 65}, "preset"),
        ("post", "/v1/retrain", {"seed": 2**32}, "seed"),
    ],
)
def test_size_limits_on_every_route(client: TestClient, method: str, path: str, body: dict, key: str) -> None:
    r = getattr(client, method)(path, json=body, headers=KEY)
    assert r.status_code == 400 and keys(r) == [key], r.text


def test_path_ids_are_limited(client: TestClient) -> None:
    for job_id in ("j" * 257, "a%01b", "a%00b"):
        r = client.get(f"/v1/jobs/{job_id}", headers=KEY)
        assert r.status_code == 400 and keys(r) == ["job_id"], (job_id, r.text)
    assert client.get("/v1/jobs/" + "j" * 256, headers=KEY).status_code == 404


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"strategy": "sample", "temperature": 5e-324}, "temperature"),
        ({"strategy": "sample", "temperature": 1e-3}, "temperature"),
        ({"strategy": "sample", "temperature": 1e308}, "temperature"),
        ({"num_beams": 65}, "num_beams"),
        ({"num_samples": 257}, "num_samples"),
        ({"min_labels": 10**6}, "min_labels"),
        ({"top_k": 2**70}, "top_k"),
        ({"threshold": -0.1}, "threshold"),
    ],
)
def test_decoding_values_that_would_blow_up_are_400(client: TestClient, extra: dict, key: str) -> None:
    r = client.post("/v1/tag", json={"texts": ["hello there"], **extra})
    assert r.status_code == 400 and keys(r) == [key], r.text


def test_decoding_extremes_inside_the_bounds_answer(client: TestClient) -> None:
    for extra in ({"strategy": "sample", "temperature": 0.01, "num_samples": 256}, {"strategy": "sample", "temperature": 100},
                  {"num_beams": 64}, {"min_labels": 10_000, "top_k": 10_000}):
        r = client.post("/v1/tag", json={"texts": ["hello there"], **extra})
        assert r.status_code == 200, (extra, r.text)


def test_work_budget(tiny_model_dir: Path, tmp_path: Path) -> None:
    """8 long texts are 8 x (48 input + 16 decoded) tokens on the tiny model: beam 5 costs 2,560 token-sequences."""
    with running(settings_for(tiny_model_dir, tmp_path / "svc", max_request_work=3_000)) as c:
        assert c.post("/v1/tag", json={"texts": [LONG] * 8}).status_code == 200  # 2,560
        r = c.post("/v1/tag", json={"texts": [LONG] * 8, "num_beams": 64})
        assert r.status_code == 400 and keys(r) == ["num_beams"] and "32,768" in r.text and "XLGEN_MAX_REQUEST_WORK" in r.text
        r = c.post("/v1/tag", json={"texts": [LONG] * 8, "strategy": "sample", "num_samples": 256})
        assert r.status_code == 400 and keys(r) == ["num_samples"], r.text
        r = c.post("/v1/tag", json={"texts": [LONG] * 8, "strategy": "beam", "min_labels": 1, "threshold": 0.5})
        assert r.status_code == 200
        r = c.post("/v1/tag", json={"texts": [LONG] * 9})  # texts itself over the limit of 8 comes first
        assert r.status_code == 400 and keys(r) == ["texts"]
        # a short text's samples cost its input and its decoded length each: 128 fit, 256 do not
        assert c.post("/v1/tag", json={"texts": ["hi"], "strategy": "sample", "num_samples": 128}).status_code == 200
        r = c.post("/v1/tag", json={"texts": ["hi"], "strategy": "sample", "num_samples": 256})
        assert r.status_code == 400 and keys(r) == ["num_samples"], r.text
        assert 'xlgen_rejected_requests_total{reason="work"} 3.0' in c.get("/metrics").text
    with running(settings_for(tiny_model_dir, tmp_path / "svc2", max_request_work=1_000)) as c:
        r = c.post("/v1/tag", json={"texts": [LONG] * 8})
        assert r.status_code == 400 and keys(r) == ["texts"], r.text


def test_the_readme_requests_fit_the_default_budget(tiny_model_dir: Path, tmp_path: Path) -> None:
    from xlgen.service.settings import Settings

    budget = Settings().max_request_work
    assert budget >= 64 * (512 + 64) * 5  # max_texts texts of a 512-token model decoding 64 tokens, beam 5
    with running(settings_for(tiny_model_dir, tmp_path / "svc", max_texts=64, max_chars=10_000)) as c:
        for extra in ({"num_beams": 64}, {"strategy": "sample", "num_samples": 256}):
            r = c.post("/v1/tag", json={"texts": ["Thanks, this is great!", {"id": "t2", "text": "I am so angry right now"}], **extra})
            assert r.status_code == 200, r.text


def test_swapping_a_broken_model_directory_is_400(client: TestClient, tiny_model_dir: Path, tmp_path: Path) -> None:
    before = client.get("/v1/model").json()["version"]
    cases = {"{broken": "does not read", "[]": "does not read", '{"metrics": [1]}': "does not read",
             '{"metrics": {"dev_micro_f1": "x"}}': "does not read"}
    for i, (content, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}"
        shutil.copytree(tiny_model_dir, bad)
        (bad / "xlgen.json").write_text(content)
        r = client.put("/v1/model", json={"model_dir": str(bad), "force": True}, headers=KEY)
        assert r.status_code == 400 and keys(r) == ["model_dir"] and message in r.text, r.text
    # metadata that reads, weights that do not load: still the directory's fault, the served model stays
    bad = tmp_path / "noweights"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "model.safetensors").unlink()
    r = client.put("/v1/model", json={"model_dir": str(bad), "force": True}, headers=KEY)
    assert r.status_code == 400 and keys(r) == ["model_dir"] and "does not load" in r.text, r.text
    r = client.put("/v1/model", json={"model_dir": "/" + "x" * 300, "force": True}, headers=KEY)  # a name too long for the file system
    assert r.status_code == 400 and keys(r) == ["model_dir"]
    assert client.get("/v1/model").json()["version"] == before


def test_every_integer_field_of_a_body_is_bounded() -> None:
    """No integer reaches storage (32 or 64 bits) or the model unbounded."""
    from xlgen.service import schemas

    def check(t: Any, where: str) -> None:
        if isinstance(t, msgspec.inspect.Metadata):
            t = t.type
        if isinstance(t, msgspec.inspect.IntType):
            assert t.le is not None or t.lt is not None, where
            assert t.ge is not None or t.gt is not None, where
        for child in getattr(t, "types", ()) or ():
            check(child, where)
        if isinstance(t, msgspec.inspect.ListType):
            check(t.item_type, where)
        if isinstance(t, msgspec.inspect.StructType):
            for f in t.fields:
                check(f.type, f"{where}.{f.name}")

    bodies = [v for v in vars(schemas).values() if isinstance(v, type) and issubclass(v, schemas.Body) and v is not schemas.Body]
    assert len(bodies) >= 8
    for body in bodies:
        check(msgspec.inspect.type_info(body), body.__name__)


def test_openapi_documents_every_status_with_the_error_body(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    error = schema["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"status_code", "detail"} and {"status_code", "detail", "extra"} <= set(error["properties"])
    specific = {("post", "/v1/tag"): {503, 504}, ("get", "/v1/model"): {503}, ("put", "/v1/model"): {404, 409, 503},
                ("post", "/v1/al/next-batch"): {503}, ("post", "/v1/annotations"): {404}, ("post", "/v1/retrain"): {409, 503},
                ("get", "/v1/jobs/{job_id}"): {404}, ("get", "/health/ready"): {503}}
    seen = 0
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            seen += 1
            codes = {int(c) for c in op["responses"]}
            want = set(specific.get((method, path), set()))
            if op.get("parameters") or "requestBody" in op:
                want.add(400)
            if op.get("security"):
                want.add(401)
            if "requestBody" in op:
                want |= {413, 415}
            assert want <= codes, (method, path, sorted(codes), sorted(want))
            for code in codes:
                if code >= 400 and (method, path) != ("get", "/health/ready"):
                    content = op["responses"][str(code)]["content"]["application/json"]["schema"]
                    assert content == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
    assert seen >= 14


def test_openapi_states_the_rules_the_service_enforces(client: TestClient) -> None:
    schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]
    tag = schemas["TagRequest"]
    assert tag["additionalProperties"] is False
    assert {"type": "string", "minLength": 1, "pattern": VISIBLE} in tag["properties"]["texts"]["items"]["anyOf"]
    assert tag["properties"]["temperature"]["anyOf"][0]["minimum"] == 0.01
    assert schemas["AnnotationRequest"]["properties"]["round"]["minimum"] == 0
    assert "oneOf" in schemas["SwapRequest"]
    paths = client.get("/schema/openapi.json").json()["paths"]
    (job_id,) = paths["/v1/jobs/{job_id}"]["get"]["parameters"]
    assert job_id["schema"]["maxLength"] == 256 and job_id["schema"]["pattern"]
    params = {p["name"]: p for p in paths["/v1/annotations"]["get"]["parameters"]}
    assert params["round"]["schema"]["minimum"] == 0 and params["round"]["schema"]["maximum"] == 2**31 - 1


def test_the_visible_pattern_means_the_same_in_python_and_ecmascript() -> None:
    """Whitespace-only strings are refused by msgspec (Python's regex) exactly where a client reading
    the OpenAPI pattern (ECMAScript's regex, whose \\s is the list below) expects it."""
    import re

    ecma_space = set("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | {chr(c) for c in range(0x2000, 0x200B)}
    for code in [*range(0x3001), 0xFEFF]:
        ch = chr(code)
        visible = bool(re.search(VISIBLE, ch))
        assert visible == (not ch.isspace() and ch not in ecma_space), repr(ch)
        assert visible == (ch not in ecma_space and ch not in "\x1c\x1d\x1e\x1f\x85"), repr(ch)


def test_options_lists_every_method_of_a_path(client: TestClient) -> None:
    r = client.options("/v1/model")
    assert r.status_code == 204 and set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "PUT", "OPTIONS"}
    assert set(client.options("/v1/tag").headers["allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}


def test_error_bodies_match_their_schema(client: TestClient) -> None:
    """Every error answer decodes as the documented error body, Litestar's own validation errors too."""
    from xlgen.service.errors import ErrorBody

    for r in (client.post("/v1/tag", json={"texts": []}), client.get("/v1/annotations", params={"round": "x"}),
              client.post("/v1/pool", json={"documents": [{"id": "a", "text": "x"}]}), client.get("/v1/jobs/none"),
              client.post("/v1/tag", content=b"{}", headers={"content-type": "text/plain"})):
        assert r.status_code >= 400
        body = msgspec.json.decode(r.content, type=ErrorBody)
        assert body.status_code == r.status_code and body.detail
        assert json.loads(r.content).keys() <= {"status_code", "detail", "extra"}
