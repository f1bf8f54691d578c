"""What the contract test tolerates: documented refusals only, each with the reason the schema cannot say more."""

from __future__ import annotations

import re
from typing import Any

# 5xx the API documents: X-Min-Position not reached within MM_READ_YOUR_WRITES_TIMEOUT_S.
SERVER_REFUSALS = {"PROJECTION_LAGGING"}

# VALIDATION_ERROR details a schema-valid request may still earn: rules JSON Schema cannot express.
UNEXPRESSED_RULES = {
    "cursor is not valid": "a cursor is opaque: only nextCursor values the server issued are valid",
    "url's host is not a valid host name": "host names and IP addresses are checked in code, not by a pattern",
    "url must name a host": "the pattern checks the scheme; a URL without a host is refused in code",
    "url is not a valid URL": "a non-numeric or out-of-range port is refused when the URL is parsed",
    "url must not contain whitespace": "control characters and whitespace anywhere in the URL",
    "url must not carry credentials": "user:password@ in the authority",
    "metadata must encode to at most": "metadata is bounded in encoded bytes, not in keys alone",
    "must be an RFC 3339 time": "since/until: Python's RFC 3339 reading is stricter than format: date-time",
    "capability data.": "a capability node's data needs name, price and providerKey (described, not schematised)",
    "is nested deeper than": "free-form JSON (data, metadata) is bounded in depth, which JSON Schema cannot count",
    "numbers must be finite": "1e400 is valid JSON and decodes to infinity, which events cannot store",
    "bytes once encoded as JSON": "free-form data is bounded in encoded bytes",
    "an edge cannot join a node to itself": "from != to compares two fields, beyond JSON Schema",
    "each providerKey may appear once": "uniqueness of one field across array items is beyond JSON Schema",
    "maxPrice needs currency": "one query parameter requiring another is beyond a parameter's schema",
    "needs exactly one of allow or deny": "an allow/deny rule takes one of the two lists, which msgspec cannot"
                                          " state as oneOf",
    "the backtest window must have since before until": "two fields compared (and a 31-day span) is beyond"
                                                         " JSON Schema",
    "a draft backtest needs rules": "rules is optional on a saved policy's backtest, required on a draft's (one"
                                    " request schema serves both)",
    "give exactly one of listingId and capability": "an order names a listing or a capability, which msgspec cannot"
                                                    " state as oneOf",
    "a split needs sellerShare": "a split's share is bounded by the order's price, known only to the server",
    "sellerShare applies to a split only": "one field requiring another's value is beyond JSON Schema",
    "must not contain NUL": "PostgreSQL text cannot hold \\u0000; a pattern on every string would bury the schema",
}


def _code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """`not_a_server_error`, except the documented 503s."""
    if response.status_code >= 500 and not (response.status_code == 503 and _code(response) in SERVER_REFUSALS):
        raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")
    return None


def schema_valid_input_is_not_refused_as_invalid(ctx: Any, response: Any, case: Any) -> bool | None:
    """`positive_data_acceptance`, except business refusals: input the schema calls valid may be refused for
    what it means (unknown ids, states, permissions: 401/403/404/409/412/422), but never as malformed."""
    meta = getattr(case, "meta", None)
    if meta is None or response.status_code != 400 or not _really_positive(case):
        return None
    if _code(response) != "VALIDATION_ERROR":
        return None
    detail = str(response.json().get("detail", ""))
    if not any(rule in detail for rule in UNEXPRESSED_RULES):
        raise AssertionError(f"schema-valid input refused as invalid: {detail} ({meta!r:.600})")
    return None


def _really_positive(case: Any) -> bool:
    """Positive in every part: the coverage phase mixes a negative header into a "positive" case, and
    sends some header values without regard to their pattern."""
    meta = case.meta
    if not meta.generation.mode.is_positive or any(not c.mode.is_positive for c in meta.components.values()):
        return False
    for parameter in case.operation.headers:
        pattern = (parameter.definition.get("schema") or {}).get("pattern")
        value = (case.headers or {}).get(parameter.name)
        if pattern and isinstance(value, str) and not re.search(pattern, value):
            return False
    return True


ONLY_DOCUMENTED_REFUSALS = [no_undocumented_server_error, schema_valid_input_is_not_refused_as_invalid]
