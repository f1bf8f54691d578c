"""JSON Schema checks shared by the graph (a capability's inputSchema) and discovery (a task input against it)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jsonschema
import msgspec
from jsonschema.exceptions import SchemaError

_encode = msgspec.json.Encoder(order="sorted").encode


def schema_key(schema: dict[str, Any]) -> bytes:
    """The schema's canonical JSON (keys sorted): equal schemas, equal keys."""
    return _encode(schema)


@lru_cache(maxsize=4096)
def compiled_validator(schema_json: bytes) -> Any:
    """A validator for the schema whose canonical JSON (schema_key) this is, checked against its metaschema
    and compiled once per distinct schema; raises SchemaError when it is not a valid JSON Schema."""
    schema = msgspec.json.decode(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validator(schema: dict[str, Any]) -> Any:
    """A validator for `schema`; raises SchemaError when it is not a valid JSON Schema."""
    return compiled_validator(schema_key(schema))


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a valid JSON Schema (its dialect's metaschema refuses it), or None."""
    try:
        validator(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        message = exc.message if len(exc.message) <= 300 else exc.message[:297] + "..."
        return f"{message} (at {where})"
    return None
