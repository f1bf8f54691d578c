"""Validation errors name what the client sent (`type`, `machineId`), not the handler's Python parameters."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.params import ParameterKwarg


def wire_names(request: Request[Any, Any, Any], errors: list[Any]) -> list[Any]:
    try:
        fields = request.route_handler.parsed_fn_signature.parameters
    except Exception:  # no route matched: nothing to translate
        return errors
    renamed = {name: f.kwarg_definition.name for name, f in fields.items()
               if isinstance(f.kwarg_definition, ParameterKwarg) and f.kwarg_definition.name}
    return [{**e, "key": renamed.get(e["key"], e["key"])} if isinstance(e, dict) and isinstance(e.get("key"), str)
            else e for e in errors]
