"""Fixed, realistic problem+json examples per status, for the OpenAPI document (never random ones)."""

from __future__ import annotations

from typing import Any

from litestar.openapi.spec import Example

PROBLEM_JSON = "application/problem+json"

# status -> (title, code, detail): the most common refusal with that status.
_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Bad Request", "VALIDATION_ERROR", "Validation failed for POST /v1/machines: Object missing required field"
                                             " `publicKey`"),
    401: ("Unauthorized", "UNAUTHORIZED", "send an API key as 'Authorization: Bearer <key>' or 'X-Api-Key'"),
    403: ("Forbidden", "PERMISSION_DENIED", "this operation needs an admin API key"),
    404: ("Not Found", "NOT_FOUND", "machine 3f2b8c1e-5d4a-4f6b-9c7d-2e1a0b9c8d7e not found"),
    405: ("Method Not Allowed", "METHOD_NOT_ALLOWED", "Method PUT not allowed"),
    409: ("Conflict", "MACHINE_NOT_ACTIVE", "machine 3f2b8c1e-5d4a-4f6b-9c7d-2e1a0b9c8d7e is suspended"),
    412: ("Precondition Failed", "PRECONDITION_FAILED", "If-Match \"3\" does not match the current version 4"),
    413: ("Content Too Large", "CONTENT_TOO_LARGE", "Request Entity Too Large"),
    422: ("Unprocessable Content", "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with a different request"),
    431: ("Request Header Fields Too Large", "HEADERS_TOO_LARGE", "the request headers exceed the size limit"),
    502: ("Bad Gateway", "UPSTREAM_FAILED", "every seller on the route failed (after 3 attempts; last: HTTP 503)"),
    503: ("Service Unavailable", "DATABASE_UNAVAILABLE", "the database is unavailable; retry after the delay given"),
    504: ("Gateway Timeout", "UPSTREAM_TIMEOUT", "the last seller did not answer in time (after 1 attempt)"),
}


def problem_example(status: int) -> dict[str, Any]:
    title, code, detail = _EXAMPLES.get(status, ("Error", "ERROR", "the request could not be served"))
    return {
        "type": f"https://docs.machine-markets.dev/problems/{code.lower().replace('_', '-')}",
        "title": title, "status": status, "code": code, "detail": detail,
        "instance": "/v1/machines/3f2b8c1e-5d4a-4f6b-9c7d-2e1a0b9c8d7e",
        "requestId": "9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
    }


def problem_examples(status: int) -> list[Example]:
    return [Example(summary=_EXAMPLES.get(status, ("Error",))[0], value=problem_example(status))]


def title_of(status: int) -> str:
    return _EXAMPLES.get(status, ("Error",))[0]


def problem_response(status: int) -> dict[str, Any]:
    """An OpenAPI response object for a problem the document adds itself (not from a ResponseSpec)."""
    return {
        "description": title_of(status),
        "content": {PROBLEM_JSON: {
            "schema": {"$ref": "#/components/schemas/Problem"},
            "examples": {"problem": {"summary": title_of(status), "value": problem_example(status)}},
        }},
    }
