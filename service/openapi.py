"""The OpenAPI document, made to state the rules the service enforces.

Litestar writes the document from the handlers; what its generator leaves loose is put right here,
once, when the app is made, so that a client (or a schema-driven fuzzer) reads the real rules:

* request bodies: msgspec's own JSON Schema of each body struct replaces Litestar's. It keeps
  ``additionalProperties: false`` for bodies that refuse unknown fields, the constraints of strings
  inside unions (``texts`` items) and bounds of 0, all of which Litestar drops; a struct's
  ``__json_schema_extra__`` (a rule across fields) is merged into its schema;
* parameters: bounds of 0 that Litestar drops (``round >= 0``) are restored, and every string path
  parameter carries the limits :func:`xlgen.service.bodies.check_path_ids` enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPI, Operation, Reference, Schema
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

from xlgen.service.schemas import MAX_ID_CHARS

NO_CONTROL_CHARACTERS = "^[^\\x00-\\x1f\\x7f]*$"

_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusive_minimum", "lt": "exclusive_maximum",
           "min_length": "min_length", "max_length": "max_length"}


@dataclass
class RawSchema(Schema):
    """A schema given as JSON (msgspec's), written into the document as it is."""

    raw: dict[str, Any] = field(default_factory=dict)

    def to_schema(self) -> dict[str, Any]:
        return self.raw


def http_handlers(app: Litestar) -> list[tuple[HTTPRoute, HTTPRouteHandler]]:
    """Every documented HTTP handler of ``app`` with its route (the copies Litestar registered)."""
    return [(r, h) for r in app.routes if isinstance(r, HTTPRoute) for h in r.route_handlers if h.include_in_schema]


def _operation(doc: OpenAPI, route: HTTPRoute, handler: HTTPRouteHandler) -> list[Operation]:
    item = (doc.paths or {}).get(route.path_format or "/")
    ops = [getattr(item, m.lower(), None) for m in handler.http_methods] if item is not None else []
    return [op for op in ops if isinstance(op, Operation)]


def _body_structs(doc: OpenAPI, pairs: list[tuple[HTTPRoute, HTTPRouteHandler]]) -> None:
    """Request bodies that are msgspec structs, described by msgspec's JSON Schema."""
    bodies: dict[type, list[Operation]] = {}
    for route, handler in pairs:
        data = handler.parsed_fn_signature.parameters.get("data")
        if data is not None and isinstance(data.annotation, type) and issubclass(data.annotation, msgspec.Struct):
            bodies.setdefault(data.annotation, []).extend(_operation(doc, route, handler))
    if not bodies:
        return
    refs, components = msgspec.json.schema_components(list(bodies), ref_template="#/components/schemas/{name}")
    for struct in bodies:  # rules across fields that a struct states for the document
        if extra := getattr(struct, "__json_schema_extra__", None):
            components[struct.__name__].update(extra)
    assert doc.components is not None
    schemas = doc.components.schemas = dict(doc.components.schemas or {})
    schemas.update({name: RawSchema(raw=schema) for name, schema in components.items()})
    for ops, ref in zip(bodies.values(), refs, strict=True):
        for op in ops:
            if op.request_body is not None and not isinstance(op.request_body, Reference):
                for media in op.request_body.content.values():
                    media.schema = RawSchema(raw=ref)


def _parameters(doc: OpenAPI, pairs: list[tuple[HTTPRoute, HTTPRouteHandler]]) -> None:
    """Bounds of 0 restored; string path parameters limited like ids."""
    for route, handler in pairs:
        declared = handler.parsed_fn_signature.parameters
        for op in _operation(doc, route, handler):
            for param in op.parameters or []:
                if isinstance(param, Reference) or not isinstance(param.schema, Schema):
                    continue
                kwarg = declared[param.name].kwarg_definition if param.name in declared else None
                if isinstance(kwarg, ParameterKwarg):
                    for name, attr in _BOUNDS.items():
                        if getattr(kwarg, name, None) == 0 and getattr(param.schema, attr) is None:
                            setattr(param.schema, attr, 0)
                if param.param_in == "path" and param.schema.type == "string":
                    param.schema.max_length = MAX_ID_CHARS
                    param.schema.pattern = NO_CONTROL_CHARACTERS


def refine_openapi(app: Litestar) -> None:
    """Builds ``app``'s OpenAPI document now and makes it exact (see the module docstring)."""
    doc = app.openapi_schema
    pairs = http_handlers(app)
    _body_structs(doc, pairs)
    _parameters(doc, pairs)
