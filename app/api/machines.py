"""HTTP routes for machines: register, prove identity, lifecycle, profile, listing."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import etag, expected_version, honour_min_position, read_your_writes, write_headers
from app.api.context import AUTHENTICATED, Principal, container_of, provide_ctx, provide_principal
from app.api.openapi_headers import AS_OF_VERSION, ETAG, IF_MATCH, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_time_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_machines import (
    ChallengeView,
    MachinePage,
    MachineView,
    RegisterMachineRequest,
    ReviseMachineRequest,
    StatusChangeRequest,
    VerifyIdentityRequest,
)
from app.api.time_travel import AsOfParam, VersionParam, as_of_headers, load_as_of, point_in_time
from app.services.machines import Outcome
from domain.machines.aggregate import Machine
from domain.machines.commands import ChangeStatus, ReviseProfile, VerifyIdentity
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from projections.machines_reader import get_machine, list_machines

LabelFilter = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?(=.{0,256})?$")]
MachineStatus = Literal["registered", "active", "suspended", "retired"]


def _respond(outcome: Outcome, status: int = 200, **headers: str) -> Response[MachineView]:
    return Response(MachineView.of(outcome.machine), status_code=status,
                    headers=write_headers(outcome.machine.version, outcome.position, **headers))


def _parse_labels(raw: list[str]) -> tuple[dict[str, str], list[str]]:
    pairs, keys = {}, []
    for item in raw:
        key, sep, value = item.partition("=")
        if not key:
            raise ApiError(400, "VALIDATION_ERROR", "label filters look like 'key' or 'key=value'")
        if sep:
            pairs[key] = value
        else:
            keys.append(key)
    return pairs, keys


class MachinesController(Controller):
    path = "/v1/machines"
    tags = ["machines"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @post("/", operation_id="registerMachine",
          opt=headers(sends=[ETAG, LOG_POSITION, LOCATION]), status_code=201, summary="Register a machine",
          responses=problems(400, 401, 409, 422))
    async def register(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       data: JSONBody[RegisterMachineRequest]) -> Response[MachineView]:
        outcome = await container_of(request).machines.register(
            ctx, name=data.name, description=data.description, public_key=data.public_key, labels=data.labels
        )
        return _respond(outcome, 201, Location=f"/v1/machines/{outcome.machine.id}")

    @get("/", operation_id="listMachines",
         opt=headers(honours=[MIN_POSITION]), summary="List machines", responses=problems(400, 401, 503))
    async def list_(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        status: Annotated[list[MachineStatus] | None, QueryParameter(name="status")] = None,
        label: Annotated[list[LabelFilter] | None, QueryParameter(
            name="label", description="'key' (has the label) or 'key=value'; several must all match")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> MachinePage:
        container = container_of(request)
        pairs, keys = _parse_labels(label or [])
        after = decode_time_cursor(cursor) if cursor else None
        await honour_min_position(request, container.pool, "machines", container.settings.read_your_writes_timeout_s)
        rows = await list_machines(
            container.pool, account_id=None if principal.is_admin else principal.account_id,
            status=list(status) if status else None, labels_all=pairs, label_keys=keys, after=after, limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])) if more else None
        return MachinePage(data=[MachineView(**r) for r in rows], next_cursor=next_cursor)

    @get("/{machine_id:uuid}", operation_id="getMachine",
         opt=headers(honours=[MIN_POSITION], sends=[ETAG, AS_OF_VERSION]),
         summary="Get a machine (now, or asOf a time / at a version)", responses=problems(400, 401, 404, 422, 503))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      machine_id: FromPath[uuid.UUID], as_of: AsOfParam = None,
                      version: VersionParam = None) -> Response[MachineView]:
        container = container_of(request)
        point = point_in_time(as_of, version)
        if point is not None:
            machine = await load_as_of(container, Machine, machine_id, point, "machine")
            if not principal.is_admin and machine.account_id != principal.account_id:
                raise NotFound(f"machine {machine_id} not found")
            return Response(MachineView.of(machine), headers=as_of_headers(machine.version))
        within = container.settings.read_your_writes_timeout_s
        await honour_min_position(request, container.pool, "machines", within)
        await read_your_writes(container.pool, "machines", machine_id, within)
        row = await get_machine(container.pool, machine_id, None if principal.is_admin else principal.account_id)
        if row is None:
            raise NotFound(f"machine {machine_id} not found")
        return Response(MachineView(**row), headers={"ETag": etag(row["version"])})

    @patch("/{machine_id:uuid}", operation_id="reviseMachine",
           opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]), summary="Revise name, description or labels",
           responses=problems(400, 401, 404, 409, 412))
    async def revise(self, request: Request[Any, Any, Any],
                     ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
                     data: JSONBody[ReviseMachineRequest]) -> Response[MachineView]:
        cmd = ReviseProfile(name=data.name, description=data.description, labels=data.labels)
        outcome = await container_of(request).machines.revise(ctx, machine_id, cmd, expected_version(request))
        return _respond(outcome)

    @post("/{machine_id:uuid}/identity/challenge", operation_id="issueIdentityChallenge",
          opt=headers(sends=[LOG_POSITION]),
          status_code=201, summary="Issue an identity challenge",
          responses=problems(400, 401, 404, 409, 422))
    async def challenge(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                        machine_id: FromPath[uuid.UUID]) -> Response[ChallengeView]:
        outcome = await container_of(request).machines.issue_challenge(ctx, machine_id)
        c = outcome.machine.challenge
        assert c is not None
        headers = write_headers(None, outcome.position)
        return Response(ChallengeView(challenge_id=c["id"], nonce=c["nonce"], expires_at=c["expires_at"]),
                        status_code=201, headers=headers)

    @post("/{machine_id:uuid}/identity/verify", operation_id="verifyIdentity", opt=headers(sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Verify the signed challenge",
          responses=problems(400, 401, 404, 409, 422))
    async def verify(self, request: Request[Any, Any, Any],
                     ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
                     data: JSONBody[VerifyIdentityRequest]) -> Response[MachineView]:
        cmd = VerifyIdentity(challenge_id=data.challenge_id, signature=data.signature)
        return _respond(await container_of(request).machines.verify_identity(ctx, machine_id, cmd))

    @post("/{machine_id:uuid}/activate", operation_id="activateMachine",
          opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Activate a verified machine",
          responses=problems(400, 401, 404, 409, 412, 422))
    async def activate(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                       machine_id: FromPath[uuid.UUID]) -> Response[MachineView]:
        return _respond(await container_of(request).machines.activate(ctx, machine_id, expected_version(request)))

    @post("/{machine_id:uuid}/suspend", operation_id="suspendMachine",
          opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Suspend an active machine",
          responses=problems(400, 401, 404, 409, 412, 422))
    async def suspend(self, request: Request[Any, Any, Any],
                      ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
                      data: JSONBody[StatusChangeRequest | None] = None) -> Response[MachineView]:
        cmd = ChangeStatus(reason=data.reason if data else None)
        return _respond(await container_of(request).machines.suspend(ctx, machine_id, cmd, expected_version(request)))

    @post("/{machine_id:uuid}/reactivate", operation_id="reactivateMachine",
          opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Reactivate a suspended machine",
          responses=problems(400, 401, 404, 409, 412, 422))
    async def reactivate(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                         machine_id: FromPath[uuid.UUID]) -> Response[MachineView]:
        return _respond(await container_of(request).machines.reactivate(ctx, machine_id, expected_version(request)))

    @post("/{machine_id:uuid}/retire", operation_id="retireMachine",
          opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION]),
          status_code=200, summary="Retire a machine for good",
          responses=problems(400, 401, 404, 409, 412, 422))
    async def retire(self, request: Request[Any, Any, Any],
                     ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
                     data: JSONBody[StatusChangeRequest | None] = None) -> Response[MachineView]:
        cmd = ChangeStatus(reason=data.reason if data else None)
        return _respond(await container_of(request).machines.retire(ctx, machine_id, cmd, expected_version(request)))
