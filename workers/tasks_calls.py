"""One call to a seller for one run: the endpoint as it stands now, its revealed token, the guarded POST, and
the run's result (status, latency, error class, digest, bounded body). Never raises for the seller's trouble."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import msgspec

from app.container import Container
from app.outbound import OutboundClient, OutboundError, OutboundResponse, ResponseTooLarge
from app.sealing import SecretsUnavailable
from domain.machines.aggregate import Machine
from domain.runtime.endpoint import ACTIVE, RuntimeEndpoint, endpoint_id
from domain.shared.documents import MAX_DEPTH, depth
from domain.shared.errors import DomainError
from domain.tasks.aggregate import Task
from domain.tasks.commands import Candidate, RunResult

log = logging.getLogger("mm.workers.tasks")

MAX_BODY_BYTES = 1024 * 1024
MAX_RECEIPT_CHARS = 512  # an Ed25519 signature is 88 base64 characters; anything longer is kept cut, and fails
# Error classes of our own, beside the outbound client's (connect, timeout, ssrf-refused, ...) and http-NxX.
ENDPOINT_UNAVAILABLE = "endpoint-unavailable"  # deleted, expired, never set, or its machine no longer active
CREDENTIAL_UNAVAILABLE = "credential-unavailable"  # the sealed token cannot be opened with this MM_SECRET_KEY
INVALID_JSON = "invalid-json"  # a 2xx whose body is not JSON: the buyer asked for a JSON answer


async def call_seller(c: Container, client: OutboundClient, task: Task, run: dict[str, Any]) -> RunResult:
    """POST the task's input to the run's seller; the result is what the run records."""
    assert task.route is not None
    step: Candidate = task.route["steps"][run["attempt"] - 1]
    run_id = run["run_id"]
    started = time.perf_counter()
    # The endpoint and its machine as they stand, in one statement.
    endpoint, machine = await c.repo.get_many([(RuntimeEndpoint, endpoint_id(step.seller_machine_id,
                                                                             step.provider_key)),
                                               (Machine, step.seller_machine_id)])
    if not isinstance(endpoint, RuntimeEndpoint) or endpoint.status != ACTIVE or not _operational(machine):
        return _failed(run_id, ENDPOINT_UNAVAILABLE, started)
    try:
        token = c.runtime.reveal_auth_token(endpoint)
    except SecretsUnavailable:
        log.error("task %s run %s: the endpoint's token cannot be unsealed with this MM_SECRET_KEY", task.id, run_id)
        return _failed(run_id, CREDENTIAL_UNAVAILABLE, started)
    try:
        response = await client.request(endpoint.url, idempotency_key=str(run_id), json=task.input,
                                        bearer_token=token, timeout_s=task.constraints.timeout_ms / 1000,
                                        max_body_bytes=MAX_BODY_BYTES)
    except OutboundError as exc:
        # The client's messages name host and port at most: never the token, the body or a query string.
        log.info("task %s run %s attempt %d: %s (%s)", task.id, run_id, run["attempt"], exc.error_class, exc)
        status = exc.status if isinstance(exc, ResponseTooLarge) else None
        return _failed(run_id, exc.error_class, started, status)
    result = from_response(run_id, response)
    log.info("task %s run %s attempt %d: HTTP %d in %d ms%s", task.id, run_id, run["attempt"], response.status,
             result.latency_ms, f" ({result.error_class})" if result.error_class else "")
    return result


def from_response(run_id: Any, response: OutboundResponse) -> RunResult:
    """Any status is an answer: its class, the body as JSON (or as text when it is not JSON) and its digest."""
    parsed, is_json = _body(response.body)
    error_class = None
    if response.status >= 300:
        error_class = f"http-{response.status // 100}xx"
    elif not is_json:
        error_class = INVALID_JSON
    receipt = response.headers.get("x-mm-receipt")
    return RunResult(run_id=run_id, http_status=response.status, latency_ms=round(response.elapsed_ms),
                     error_class=error_class, response_digest=hashlib.sha256(response.body).hexdigest(),
                     body=parsed, receipt=receipt[:MAX_RECEIPT_CHARS] if receipt else None)


def _body(raw: bytes) -> tuple[Any, bool]:
    """(body, whether it was JSON). Stored in the run's event (jsonb): no NUL characters, bounded nesting."""
    if not raw.strip():
        return None, True  # 204, or a 200 with nothing to say: no output, not a broken one
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _text(raw), False
    try:
        too_deep = depth(value, "body") > MAX_DEPTH * 4
    except DomainError:  # a number JSON allows and jsonb does not (an overflowing float): keep the text
        return _text(raw), True
    if too_deep:
        return _text(raw), True
    return _without_nul(value), True


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; a seller's answer may."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _operational(machine: object) -> bool:
    if not isinstance(machine, Machine):
        return False
    try:
        machine.ensure_operational()
    except DomainError:
        return False
    return True


def _failed(run_id: Any, error_class: str, started: float, status: int | None = None) -> RunResult:
    return RunResult(run_id=run_id, http_status=status, latency_ms=round((time.perf_counter() - started) * 1000),
                     error_class=error_class, response_digest=None, body=None)
