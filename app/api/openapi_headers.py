"""Request and response headers in the OpenAPI document, declared per handler next to the code that uses them.

A handler says what it honours and sends with `opt=headers(honours=[...], sends=[...])`; the headers every
route shares (X-Request-Id, Idempotency-Key on POSTs and its Idempotent-Replayed) are added to all of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.handlers import HTTPRouteHandler

from app.api.problems import ApiError

IF_MATCH, MIN_POSITION, PREFER, LAST_EVENT_ID = "If-Match", "X-Min-Position", "Prefer", "Last-Event-ID"
ETAG, LOG_POSITION, LOCATION, CACHE_CONTROL = "ETag", "X-Log-Position", "Location", "Cache-Control"
PREFERENCE_APPLIED = "Preference-Applied"
AS_OF_VERSION = "X-As-Of-Version"

_POSITION = r"^[0-9]+\.[0-9]+$"
# As app.api.consistency.expected_version reads it (after stripping whitespace): "3", W/"3", 3 or *.
_IF_MATCH = r'^\s*(\*|(W/)?("[0-9]+"|[0-9]+))\s*$'

REQUEST_HEADERS: dict[str, dict[str, Any]] = {
    IF_MATCH: {
        "description": "Act only if the resource is still at this version (its ETag); otherwise 412.",
        "schema": {"type": "string", "pattern": _IF_MATCH}, "example": '"3"'},
    MIN_POSITION: {
        "description": "Wait (up to MM_READ_YOUR_WRITES_TIMEOUT_S) until the read model includes the write whose"
                       " X-Log-Position this is; 503 PROJECTION_LAGGING if it does not in time. Empty: no wait.",
        "schema": {"type": "string", "pattern": r"^([0-9]+\.[0-9]+)?$"}, "example": "1234.5678"},
    PREFER: {
        "description": "RFC 7240. `wait=N`: wait up to N seconds (default 30, at most 120) for the outcome before"
                       " answering 202; `respond-async`: answer 202 at once. Other preferences are ignored.",
        "schema": {"type": "string"}, "example": "wait=10"},  # unrecognised preferences are ignored, never refused
    LAST_EVENT_ID: {
        "description": "Resume a stream strictly after the record with this cursor (the last `id:` received);"
                       " EventSource clients send it when they reconnect.",
        "schema": {"type": "string", "maxLength": 512}, "example": "WzEyMzQsNTY3OF0"},
}
_IDEMPOTENCY_KEY = {
    "description": "Makes the POST safe to retry: a repeat with the same key and body returns the first answer"
                   " (marked Idempotent-Replayed); the same key with another body is 422. Blank means none. If"
                   " the first answer was never kept (a 503, or a connection lost after the command committed),"
                   " the repeat answers with the resource as that command left it, never a refusal caused by"
                   " the command itself, and changes nothing twice.",
    "schema": {"type": "string", "maxLength": 255}, "example": "3d6f0a1c-register-node-7"}
_REQUEST_ID = {
    "description": "Your id for this request, echoed in X-Request-Id and problem bodies when it matches"
                   " ^[A-Za-z0-9._:-]{1,128}$ (otherwise the server assigns one).",
    "schema": {"type": "string"}, "example": "client-7f3a"}

RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    ETAG: {"description": "The resource's version; send it back as If-Match.",
           "schema": {"type": "string", "pattern": r'^"[0-9]+"$'}, "required": True},
    LOG_POSITION: {"description": "Where this write sits in the event log; send it as X-Min-Position to read it"
                                  " back from a list.", "schema": {"type": "string", "pattern": _POSITION}},
    LOCATION: {"description": "Path of the created resource.", "schema": {"type": "string"}, "required": True},
    PREFERENCE_APPLIED: {"description": "The Prefer preferences honoured (RFC 7240), e.g. wait=10.",
                         "schema": {"type": "string"}},
    AS_OF_VERSION: {"description": "Sent when asOf or version was asked: the stream version the body was rebuilt"
                                   " to from the event log.", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    CACHE_CONTROL: {"description": "The body holds a secret shown once: never cached.",
               "schema": {"type": "string", "enum": ["no-store"]}, "required": True},
}
_X_REQUEST_ID = {"description": "The request's id (yours if usable, else the server's).",
                 "schema": {"type": "string"}, "required": True}
_REPLAYED = {"description": "Present on a response replayed for a repeated Idempotency-Key.",
             "schema": {"type": "string", "enum": ["true"]}}


def headers(*, honours: Sequence[str] = (), sends: Sequence[str] = ()) -> dict[str, Any]:
    """Handler `opt`: request headers it honours, response headers its success responses carry."""
    unknown = (set(honours) - set(REQUEST_HEADERS)) | (set(sends) - set(RESPONSE_HEADERS))
    if unknown:
        raise ValueError(f"undocumented headers {sorted(unknown)}")
    return {"openapi_headers": {"honours": tuple(honours), "sends": tuple(sends)}}


_PATTERNS = {name: re.compile(spec["schema"]["pattern"]) for name, spec in REQUEST_HEADERS.items()
             if "pattern" in spec["schema"]}
_MAX_LENGTHS = {name: spec["schema"]["maxLength"] for name, spec in REQUEST_HEADERS.items()
                if "maxLength" in spec["schema"]}


async def check_honoured_headers(request: Request[Any, Any, Any]) -> None:
    """Before any handler: a header the route honours is held to its documented schema, whatever path the handler
    takes (a time-travel GET answers before it would read X-Min-Position, and must still refuse a malformed one)."""
    declared = request.route_handler.opt.get("openapi_headers") or {}
    for name in declared.get("honours", ()):
        value = request.headers.get(name)
        if value is None:
            continue
        pattern, longest = _PATTERNS.get(name), _MAX_LENGTHS.get(name)
        if (pattern is not None and pattern.fullmatch(value) is None) or (longest is not None and len(value) > longest):
            raise ApiError(400, "VALIDATION_ERROR", f"the {name} header is malformed; see its schema in the OpenAPI")


def add_headers(operation: dict[str, Any], method: str, handler: HTTPRouteHandler | None) -> None:
    declared = (handler.opt.get("openapi_headers") if handler is not None else None) or {}
    parameters = operation.setdefault("parameters", [])
    for name in declared.get("honours", ()):
        parameters.append({"name": name, "in": "header", "required": False, **REQUEST_HEADERS[name]})
    if method == "post":
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False, **_IDEMPOTENCY_KEY})
    parameters.append({"name": "X-Request-Id", "in": "header", "required": False, **_REQUEST_ID})
    for status, response in operation.get("responses", {}).items():
        documented = response.setdefault("headers", {})
        if status.startswith("2"):
            for name in declared.get("sends", ()):
                if name != LOCATION or status in ("201", "202"):  # created, or where to follow the work
                    documented[name] = RESPONSE_HEADERS[name]
        # Refused before routing when the headers are too large, so a 431 may come without an id.
        documented["X-Request-Id"] = {**_X_REQUEST_ID, "required": status != "431"}
        if method == "post":  # replayed by the Idempotency-Key store of the account whose key is sent
            documented["Idempotent-Replayed"] = _REPLAYED
