"""The Label Studio ML-backend protocol as Label Studio calls it, through the test client.

The payloads in ``tests/fixtures/labelstudio/`` copy the shapes Label Studio sends, from its own code:
``label_studio/webhooks/models.py`` (``WebhookAction.ACTIONS``: keys, ``many``, nested ``task``),
``label_studio/webhooks/utils.py`` (``emit_webhooks_for_instance``, ``api_webhook_for_delete``: the
payload with ``action`` and ``project``; a deletion sends ``annotations: [{"id": ..}]``),
``label_studio/webhooks/serializers_for_hooks.py`` (every model field of annotations, tasks and
projects), ``label_studio/data_manager/actions/predictions_to_annotations.py`` (where the bulk
``ANNOTATIONS_CREATED`` comes from), ``label_studio/ml/api_connector.py`` (``/predict``, ``/setup``,
``/train`` and the ``START_TRAINING`` webhook requests), ``label_studio/ml/models.py`` (``/train``'s
answer is read as ``response["job"]``), ``docs/source/guide/webhook_reference.md`` (example payloads),
all of HumanSignal/label-studio; and ``label_studio_ml/api.py`` of HumanSignal/label-studio-ml-backend
(the backend side: ``/predict``, ``/setup``, ``/webhook``, ``/health``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support import KEY, fixture, running, settings_for
from xlgen.service import trainer_process
from xlgen.service.jobs import build_train_file


@pytest.fixture()
def client(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> Iterator[TestClient]:
    with running(settings_for(tiny_model_dir, tmp_path / "svc", train_data=str(tiny_data))) as c:
        yield c


def export(c: TestClient, history: bool = False) -> list[dict[str, Any]]:
    return [json.loads(x) for x in c.get("/v1/annotations", params={"history": str(history).lower()}, headers=KEY).text.splitlines()]


def hook(c: TestClient, body: dict[str, Any]) -> Any:
    return c.post("/webhook", json=body, headers=KEY)


def test_bulk_created_stores_every_annotation(client: TestClient) -> None:
    r = hook(client, fixture("annotations_created_bulk"))
    assert r.status_code == 200, r.text
    assert [s["document_id"] for s in r.json()["stored"]] == ["ls-101", "ls-102", "ls-103"] and r.json()["skipped"] == []
    rows = {x["id"]: x for x in export(client)}
    assert {k: v["labels"] for k, v in rows.items()} == {"ls-101": ["gratitude"], "ls-102": ["anger"], "ls-103": ["surprise", "amusement"]}
    assert rows["ls-102"]["text"] == "I can't believe they cancelled it, so annoying." and rows["ls-102"]["annotator"] == "1"
    assert rows["ls-102"]["external_id"] == "labelstudio:512"


def test_update_then_delete_withdraws_the_labels_from_export_and_training(client: TestClient, tiny_data: Path, tmp_path: Path) -> None:
    assert hook(client, fixture("annotation_created")).status_code == 200
    assert hook(client, fixture("annotations_created_bulk")).status_code == 200  # 511 replaces 501 on task 101
    assert hook(client, fixture("annotation_updated")).json()["stored"][0]["labels"] == ["joy"]  # 501 again, now the last write
    r = hook(client, fixture("annotations_deleted"))  # annotation 512 (task 102)
    assert r.status_code == 200 and r.json()["deleted"] == [{"document_id": "ls-102", "round": 0}]
    assert {x["id"]: x["labels"] for x in export(client)} == {"ls-101": ["joy"], "ls-103": ["surprise", "amusement"]}
    # one task, two annotations: deleting the current one falls back to the other
    single = {"action": "ANNOTATION_DELETED", "annotation": {"id": 501}, "project": fixture("annotations_deleted")["project"]}
    assert hook(client, single).json()["deleted"] == [{"document_id": "ls-101", "round": 0}]
    assert {x["id"]: x["labels"] for x in export(client)} == {"ls-101": ["gratitude"], "ls-103": ["surprise", "amusement"]}
    history = [x for x in export(client, history=True) if x["action"] == "delete"]
    assert [(x["id"], x["external_id"]) for x in history] == [("ls-102", "labelstudio:512"), ("ls-101", "labelstudio:501")]
    # what a retraining would train on
    rt = client.app.state.runtime
    counts = build_train_file(rt.storage, str(tiny_data), tmp_path / "train.jsonl")
    train = (tmp_path / "train.jsonl").read_text()
    assert counts["annotated"] == 2 and "so annoying" not in train and "this made my day" in train


def test_webhook_size_limits_and_bad_items(client: TestClient) -> None:
    event = fixture("annotation_created")
    long = copy.deepcopy(event)
    long["task"]["data"]["text"] = "x" * 501  # XLGEN_MAX_CHARS is 500 here
    r = hook(client, long)
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "task.data.text" and "at most 500" in r.text
    for bad_id, message in (({"a": 1}, "not dict"), ("i" * 257, "at most 256"), (True, "not bool")):
        bad = copy.deepcopy(event)
        bad["task"]["data"]["id"] = bad_id
        r = hook(client, bad)
        assert r.status_code == 400 and r.json()["extra"][0]["key"] == "task.data.id" and message in r.text, r.text
    given = copy.deepcopy(event)
    given["task"]["data"]["id"] = 42
    assert hook(client, given).json()["stored"][0]["document_id"] == "42"
    skipped = copy.deepcopy(event)
    skipped["annotation"]["was_cancelled"] = True
    assert hook(client, skipped).status_code == 400
    # a bulk event stores what it can and names what it skipped
    bulk = fixture("annotations_created_bulk")
    bulk["task"][1]["data"] = {"image": "s3://bucket/x.png"}
    r = hook(client, bulk)
    assert r.status_code == 200 and [s["document_id"] for s in r.json()["stored"]] == ["ls-101", "ls-103"]
    assert r.json()["skipped"] == [{"key": "task[1].data.text", "message": "missing or empty text"}]
    assert sorted(x["id"] for x in export(client)) == ["42", "ls-101", "ls-103"]


def test_choices_are_stored_trimmed(client: TestClient) -> None:
    event = fixture("annotation_created")
    event["annotation"]["result"][0]["value"]["choices"] = [" joy ", "joy", "  ", "love"]
    event["annotation"]["result"].append({"type": "choices", "from_name": "other", "to_name": "text", "value": {"choices": ["x"]}})
    assert hook(client, event).json()["stored"][0]["labels"] == ["joy", "love"]  # only the config's Choices tag


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/webhook", {"action": "ANNOTATION_CREATED", "task": "x", "annotation": {}}, "task"),
        ("/webhook", {"action": "ANNOTATION_CREATED", "task": {"data": ["x"]}, "annotation": {}}, "task.data"),
        ("/webhook", {"action": "ANNOTATION_CREATED", "task": {"data": {"text": "t"}}, "annotation": "x"}, "annotation"),
        ("/webhook", {"action": "ANNOTATION_CREATED", "task": {"data": {"text": "t"}}, "annotation": {"result": {"a": 1}}},
         "annotation.result"),
        ("/webhook", {"action": "ANNOTATION_CREATED", "annotation": {"result": [{"value": {"choices": "joy"}}]}},
         "annotation.result[0].value.choices"),
        ("/webhook", {"action": "ANNOTATION_CREATED", "project": ["x"], "annotation": {}}, "project"),
        ("/webhook", {"action": "ANNOTATION_CREATED", "project": {"label_config": 5}, "annotation": {}}, "project.label_config"),
        ("/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": [{"x": 1}]}, "annotations[0].id"),
        ("/webhook", {"action": "ANNOTATIONS_DELETED"}, "annotations"),
        ("/webhook", {"action": "ANNOTATION_CREATED"}, "annotation"),
        ("/webhook", {"task": {}}, "action"),
        ("/predict", {"tasks": [{"data": "x"}]}, "tasks[0].data"),
        ("/predict", {"tasks": "x"}, "tasks"),
        ("/predict", {}, "tasks"),
        ("/predict", {"tasks": [], "label_config": 5}, "label_config"),
        ("/predict", {"tasks": [], "project": ["x"]}, "project"),
        ("/setup", {"project": ["x"]}, "project"),
        ("/setup", {"schema": 5}, "schema"),
        ("/train", {"annotations": [{"data": {}, "annotations": "x"}]}, "annotations[0].annotations"),
    ],
)
def test_malformed_label_studio_bodies_are_400_naming_the_field(client: TestClient, path: str, body: dict, key: str) -> None:
    r = client.post(path, json=body, headers=KEY)
    assert r.status_code == 400, r.text
    assert key in [x["key"] for x in r.json()["extra"]], r.json()


def test_predict_limits_choices_to_the_config_and_survives_bad_tasks(client: TestClient, tiny_model_dir: Path) -> None:
    body = fixture("predict")
    version = client.get("/v1/model").json()["version"]
    all_labels = json.loads((tiny_model_dir / "labels.json").read_text())["labels"]
    everything = body["label_config"].split("<Choice ")[0] + "".join(f'<Choice value="{x}"/>' for x in all_labels) + "</Choices></View>"
    free = client.post("/predict", json={**body, "label_config": everything}).json()["results"]
    predicted = {x for res in free for x in res["result"][0]["value"]["choices"]}
    assert predicted, free
    # a config whose choices leave out what the model predicts best: no choice outside it comes back
    others = [x for x in all_labels if x not in predicted][:5]
    narrow = body["label_config"].split("<Choice ")[0] + "".join(f'<Choice value="{x}"/>' for x in others) + "</Choices></View>"
    r = client.post("/predict", json={**body, "label_config": narrow})
    assert r.status_code == 200, r.text
    for res in r.json()["results"]:
        assert set(res["result"][0]["value"]["choices"]) <= set(others)
    # a task without its text, or with a text over the limit, gets an empty result; the others are predicted
    tasks = copy.deepcopy(body["tasks"])
    tasks[1]["data"] = {"image": "x.png"}
    tasks.append({"id": 9, "data": {"text": "y" * 501}})
    results = client.post("/predict", json={**body, "tasks": tasks}).json()["results"]
    assert len(results) == 4 and results[1] == results[3] == {"model_version": version, "score": None, "result": []}
    assert results[0]["result"][0]["from_name"] == "emotion" and results[2]["score"] > 0
    # no label_config, and project as Label Studio's "<id>.<timestamp>", an id, an object or nothing
    for project in ("2.1741083472", 2, {"id": 2}, None):
        r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "so happy"}}], "project": project})
        assert r.status_code == 200, r.text
        (region,) = r.json()["results"][0]["result"]
        assert (region["from_name"], region["to_name"], region["type"]) == ("label", "text", "choices")
    assert client.post("/setup", json=fixture("setup")).json() == {"model_version": version}
    assert client.post("/setup", json={"project": 2}).json() == {"model_version": version}


def test_train_answers_the_running_job_instead_of_409(client: TestClient) -> None:
    rt = client.app.state.runtime
    # a job of another worker of this host that is alive (this process): it holds the training lock
    running_job = rt.storage.create_job({}, owner="another-worker", host=trainer_process.HOST, server=trainer_process.identity())
    r = client.post("/train", json=fixture("train"), headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["job"] == running_job and r.json()["job_status"] == "running" and r.json()["stored"] == 2
    assert {x["id"]: x["labels"] for x in export(client)} == {"ls-101": ["joy"], "ls-104": ["love", "surprise"]}
    assert {x["annotator"] for x in export(client)} == {"annotator@example.com", "b@example.com"}
    r = hook(client, fixture("start_training"))
    assert r.status_code == 200 and r.json()["job"] == running_job
    assert client.post("/train", json=fixture("train"), headers=KEY).json()["stored"] == 2
    assert len(export(client, history=True)) == 2  # the same annotations again: nothing new written
    assert client.post("/v1/retrain", json={}, headers=KEY).status_code == 409  # the REST route still refuses
    rt.storage.finish_job(running_job, "failed")
