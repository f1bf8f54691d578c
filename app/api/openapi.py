"""Finishes the generated OpenAPI document: exact schemas, documented headers, common problems, links.

Litestar drops the constraints msgspec enforces inside containers (list item patterns, dict key
patterns, `forbid_unknown_fields`), so every body schema and query/path parameter is re-derived from
the msgspec types the server actually decodes with: the schema says what is validated, no more, no less.
"""

from __future__ import annotations

import enum
import json
import typing
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

from app.api.openapi_headers import add_headers
from app.api.openapi_links import LINKS
from app.api.problem_examples import problem_response
from app.api.problems import Problem

_REF = "#/components/schemas/{name}"
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
# Litestar renders these from the QueryParameter(...) of a handler argument, not from its type.
_PARAMETER_KEYWORDS = ("minimum", "maximum", "minLength", "maxLength", "format", "default", "description")


def handlers_by_operation(app: Litestar) -> dict[str, HTTPRouteHandler]:
    return {h.operation_id: h for route in app.routes if isinstance(route, HTTPRoute)
            for h in route.route_handlers if h.resolve_include_in_schema() and isinstance(h.operation_id, str)}


def finish_openapi(app: Litestar) -> dict[str, Any]:
    """Builds the finished document once and makes every consumer (/openapi.json, /docs) serve it."""
    plugin = app.plugins.get(OpenAPIPlugin)
    document = plugin.provide_openapi().to_schema()
    handlers = handlers_by_operation(app)
    _exact_components(document, handlers.values())
    for _path, method, operation in operations(document):
        handler = handlers.get(operation.get("operationId", ""))
        if handler is not None:
            _exact_parameters(operation, handler)
            _content(operation, handler)
        _common_problems(operation)
        add_headers(operation, method, handler)
    _add_links(document)
    # Litestar caches the rendered dict here and serves it to its docs pages; ours replaces it.
    plugin._openapi_schema = document
    return document


def operations(document: dict[str, Any]) -> typing.Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _types_in(annotation: Any) -> typing.Iterator[type]:
    """Every Struct and Enum class an annotation mentions (through Annotated, unions, generics)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct | enum.Enum):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _types_in(arg)


def _exact_components(document: dict[str, Any], handlers: typing.Iterable[HTTPRouteHandler]) -> None:
    found: set[type] = {Problem}
    for handler in handlers:  # bodies and responses; dependencies (the principal, ...) are not the API's
        signature = handler.parsed_fn_signature
        body = signature.parameters.get("data")
        for field in (body, signature.return_type):
            if field is not None:
                found.update(_types_in(field.raw))
        # Extra success bodies a handler documents (execute's 202) are the server's types too.
        for spec in (handler.responses or {}).values():
            found.update(_types_in(spec.data_container))
        found.update(handler.opt.get("openapi_components", ()))  # schemas of streamed bodies (see _content)
    ordered = sorted(found, key=lambda t: (t.__module__, t.__qualname__))
    _, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)


def _exact_parameters(operation: dict[str, Any], handler: HTTPRouteHandler) -> None:
    fields = handler.parsed_fn_signature.parameters
    wire_names = {(f.kwarg_definition.name or name) if isinstance(f.kwarg_definition, ParameterKwarg) else name: f
                  for name, f in fields.items()}
    for parameter in operation.get("parameters", []):
        field = wire_names.get(parameter["name"])
        if field is None or parameter["in"] not in ("query", "path"):
            continue
        # Optional query values keep their null branch: the server reads `?x=null` as absent.
        metas = _msgspec_meta(field.raw)
        annotated = typing.Annotated[field.annotation, *metas] if metas else field.annotation
        exact = msgspec.json.schema(annotated, ref_template=_REF)
        litestar = parameter.get("schema", {})
        for keyword in _PARAMETER_KEYWORDS:
            if keyword in litestar and keyword not in exact:
                exact[keyword] = litestar[keyword]
        if parameter["in"] == "query" and "array" in json.dumps(exact):
            parameter["explode"], parameter["style"] = True, "form"
        parameter["schema"] = exact


def _content(operation: dict[str, Any], handler: HTTPRouteHandler) -> None:
    """A handler that streams (Litestar documents a `Stream` as an untyped string) names its media types."""
    for status, content in handler.opt.get("openapi_content", {}).items():
        operation["responses"][status]["content"] = content


def _msgspec_meta(raw: Any) -> list[msgspec.Meta]:
    return [m for m in getattr(raw, "__metadata__", ()) if isinstance(m, msgspec.Meta)]


def _common_problems(operation: dict[str, Any]) -> None:
    """Every operation may meet a database outage (503 with Retry-After) or oversized headers (431)."""
    responses = operation.setdefault("responses", {})
    if "204" in responses:  # Litestar documents a `Response[None]` as a JSON null; a 204 has no body at all
        responses["204"].pop("content", None)
    for status in ("431", "503"):
        responses.setdefault(status, problem_response(int(status)))
    retry_after = {"description": "seconds to wait before retrying (sent with DATABASE_UNAVAILABLE)",
                   "schema": {"type": "integer", "minimum": 0}, "required": False}
    responses["503"].setdefault("headers", {})["Retry-After"] = retry_after


def _add_links(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(document) if "operationId" in op}
    for (source, status), targets in LINKS.items():
        response = by_id[source]["responses"][str(status)]
        links = response.setdefault("links", {})
        for target, parameters in targets:
            links[target] = {"operationId": target, "parameters": dict(parameters)}
