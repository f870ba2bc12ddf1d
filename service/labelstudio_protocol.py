"""What Label Studio sends to an ML backend, as msgspec structs, and what its labeling config says.

The shapes follow Label Studio's own code: the webhook payloads of ``label_studio/webhooks/models.py``
(``WebhookAction.ACTIONS``: ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` carry one ``annotation``
and its ``task``; ``ANNOTATIONS_CREATED`` lists of both; ``ANNOTATIONS_DELETED`` only
``annotations: [{"id": ..}]``; all of them the ``project``), serialised as in
``label_studio/webhooks/utils.py``; and the ML API requests of ``label_studio/ml/api_connector.py``
(``/predict``: ``tasks``, ``project`` as ``"<id>.<created timestamp>"``, ``label_config``, ``params``;
``/setup``: ``project``, ``schema``; ``/train``: the tasks with their ``annotations``; the
``START_TRAINING`` webhook: the ``project``). Label Studio adds fields between versions, so unknown
fields are ignored; the fields read here are typed, so a malformed one is a 400 naming it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import msgspec

ANNOTATION_WRITES = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
ANNOTATION_DELETES = ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED")
START_TRAINING = "START_TRAINING"


class LSBody(msgspec.Struct, kw_only=True):
    """Base of Label Studio bodies: unknown fields are ignored (Label Studio adds fields between versions)."""


class LSProject(LSBody):
    """A project as the webhooks serialise it (``ProjectWebhookSerializer``: every model field)."""

    id: int | str | None = None
    label_config: str | None = None


class LSRegionValue(LSBody):
    """The value of a result region; a ``choices`` region lists the chosen labels."""

    choices: list[str] | None = None


class LSRegion(LSBody):
    """One region of an annotation's result."""

    type: str | None = None
    from_name: str | None = None
    to_name: str | None = None
    value: LSRegionValue = msgspec.field(default_factory=LSRegionValue)


class LSAnnotation(LSBody):
    """An annotation (``AnnotationWebhookSerializer``: every model field; ``task`` is the task's id)."""

    id: int | str | None = None
    result: list[LSRegion] = msgspec.field(default_factory=list)
    task: int | str | dict[str, Any] | None = None  # the task's id (an object with an ``id`` tolerated)
    completed_by: int | str | dict[str, Any] | None = None
    was_cancelled: bool | None = None


class LSAnnotationRef(LSBody):
    """A deleted annotation (``OnlyIDWebhookSerializer``)."""

    id: int | str | None = None  # required; checked by the handler, so that a 400 names ``annotations[i].id``


class LSTask(LSBody):
    """A task: its id and its data (the fields of the labeling config's ``$variables``)."""

    id: int | str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class LSTaskWithAnnotations(LSTask):
    """A task with its annotations, as ``/train`` sends them (``ExportDataSerializer``)."""

    annotations: list[LSAnnotation] = msgspec.field(default_factory=list)


class WebhookEvent(LSBody):
    """A webhook call: ``action`` and the payload of that action."""

    action: str
    project: LSProject | str | int | None = None
    task: LSTask | list[LSTask] | None = None
    annotation: LSAnnotation | list[LSAnnotation] | None = None
    annotations: list[LSAnnotationRef] | None = None


class PredictRequest(LSBody):
    """``/predict``."""

    tasks: list[LSTask]
    label_config: str | None = None
    project: LSProject | str | int | None = None
    model_version: str | None = None
    params: dict[str, Any] | None = None


class SetupRequest(LSBody):
    """``/setup``."""

    project: LSProject | str | int | None = None
    schema: str | None = None
    hostname: str | None = None
    access_token: str | None = None
    extra_params: dict[str, Any] | None = None


class TrainRequest(LSBody):
    """``/train``: every task that has annotations, with them."""

    annotations: list[LSTaskWithAnnotations] = msgspec.field(default_factory=list)
    project: LSProject | str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class LabelConfig:
    """The names a labeling config gives the text and the choices.

    Attributes:
        from_name: The ``Choices`` tag's name.
        to_name: The tag it labels.
        data_key: The task data field holding the text.
        choices: The ``<Choice value=..>`` values, or None when the config lists none (absent, or
            choices taken from the task data): predictions are limited to these, since Label Studio
            does not show a choice outside its config.
        named: Whether a config named the tag (else the names are defaults, and annotations' choices
            are read from every ``choices`` region).
    """

    from_name: str = "label"
    to_name: str = "text"
    data_key: str = "text"
    choices: frozenset[str] | None = None
    named: bool = False


def parse_label_config(xml: str | None) -> LabelConfig:
    """The first ``Choices`` and the ``Text`` it points to; defaults when absent or unparsable."""
    if not xml:
        return LabelConfig()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return LabelConfig()
    tag = next(root.iter("Choices"), None)
    if tag is None:
        return LabelConfig()
    to_name = tag.get("toName", "text")
    text = next((t for t in root.iter() if t.get("name") == to_name), None)
    value = text.get("value", "$text") if text is not None else "$text"
    values = frozenset(v.strip() for c in tag.iter("Choice") if (v := c.get("value")) is not None and v.strip())
    return LabelConfig(tag.get("name", "label"), to_name, value.lstrip("$") or "text", values or None, named=True)


def project_label_config(project: LSProject | str | int | None) -> str | None:
    """The labeling config a project carries (only the webhooks' project objects do)."""
    return project.label_config if isinstance(project, LSProject) else None


def project_id(project: LSProject | str | int | None) -> str | None:
    """The id of the project a request names: a webhook's project object's ``id``, an id, or the ``"<id>.<created
    timestamp>"`` string of the ML API's requests; None when it names none."""
    if isinstance(project, LSProject):
        project = project.id
    if project is None or isinstance(project, bool):
        return None
    return str(project).strip().partition(".")[0] or None


def chosen_labels(result: list[LSRegion], from_name: str | None = None) -> list[str]:
    """The choices of an annotation's result (of every ``choices`` region, or of ``from_name``'s), trimmed,
    without empty ones or repeats."""
    out: list[str] = []
    for region in result:
        if region.type not in (None, "choices") or region.value.choices is None:
            continue
        if from_name and region.from_name not in (None, from_name):
            continue
        for label in region.value.choices:
            label = label.strip()
            if label and label not in out:
                out.append(label)
    return out


def annotator_of(annotation: LSAnnotation) -> str:
    """Who made an annotation: the user's email where given, else the user id."""
    who = annotation.completed_by
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id") or "")[:256]
    return "" if who is None else str(who)[:256]


def external_id(annotation_id: int | str) -> str:
    """The id an annotation from Label Studio is stored under (its Label Studio annotation id)."""
    return f"labelstudio:{annotation_id}"
