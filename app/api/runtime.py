"""HTTP routes for a machine's runtime endpoints: list, get, manual upsert (PUT), delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, put
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.consistency import etag, expected_version, write_headers
from app.api.context import AUTHENTICATED, container_of, provide_ctx, provide_principal, readable_machine
from app.api.openapi_headers import AS_OF_VERSION, ETAG, IF_MATCH, LOCATION, LOG_POSITION, MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_runtime import (
    ProviderKey,
    PutRuntimeEndpointRequest,
    RuntimeEndpointPage,
    RuntimeEndpointView,
)
from app.api.time_travel import AsOfParam, VersionParam, as_of_headers, load_guarded, point_in_time
from domain.runtime import rules
from domain.runtime.endpoint import RuntimeEndpoint, endpoint_id
from domain.runtime.errors import EndpointNotFound
from domain.shared.context import CommandContext
from projections.runtime_reader import get_endpoint, list_endpoints

EndpointStatus = Literal["active", "expired"]
Source = Literal["manual", "agent"]


def _after(cursor: str) -> str:
    (key,) = decode_cursor(cursor, 1)
    if not isinstance(key, str) or not rules.PROVIDER_KEY.match(key):
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")
    return key


class RuntimeEndpointsController(Controller):
    path = "/v1/machines/{machine_id:uuid}/runtime-endpoints"
    tags = ["runtime"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal), "ctx": Provide(provide_ctx)}

    @get("/", operation_id="listRuntimeEndpoints", opt=headers(honours=[MIN_POSITION]),
         summary="List a machine's runtime endpoints", responses=problems(400, 401, 404, 409, 503))
    async def list_(
        self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext], machine_id: FromPath[uuid.UUID],
        status: Annotated[list[EndpointStatus] | None, QueryParameter(name="status")] = None,
        source: Annotated[Source | None, QueryParameter(name="source")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> RuntimeEndpointPage:
        c = container_of(request)
        after = _after(cursor) if cursor else None
        await readable_machine(request, ctx, machine_id, "runtime")
        rows = await list_endpoints(c.pool, machine_id, status=list(status) if status else None, source=source,
                                    after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return RuntimeEndpointPage(data=[RuntimeEndpointView(**r) for r in rows],
                    next_cursor=encode_cursor(rows[-1]["provider_key"]) if more else None)

    @get("/{provider_key:str}", operation_id="getRuntimeEndpoint",
         opt=headers(honours=[MIN_POSITION], sends=[ETAG, AS_OF_VERSION]),
         summary="Get one runtime endpoint (now, or asOf a time / at a version)",
         responses=problems(400, 401, 404, 409, 422, 503))
    async def get_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      machine_id: FromPath[uuid.UUID], provider_key: FromPath[ProviderKey],
                      as_of: AsOfParam = None, version: VersionParam = None) -> Response[RuntimeEndpointView]:
        c = container_of(request)
        key = rules.provider_key(provider_key)
        point = point_in_time(as_of, version)
        if point is not None:
            endpoint = await load_guarded(c, c.machines.require_operational(ctx, machine_id), RuntimeEndpoint,
                                          endpoint_id(machine_id, key), point, "runtime endpoint")
            if not endpoint.exists:  # deleted at that point, as the current read would say after a delete
                raise EndpointNotFound(f"no runtime endpoint for provider key {key!r} at version {endpoint.version}")
            return Response(RuntimeEndpointView.of(endpoint), headers=as_of_headers(endpoint.version))
        await readable_machine(request, ctx, machine_id, "runtime", endpoint_id(machine_id, key))
        row = await get_endpoint(c.pool, machine_id, key)
        if row is None:
            raise EndpointNotFound(f"no runtime endpoint for provider key {key!r} on machine {machine_id}")
        return Response(RuntimeEndpointView(**row), headers={"ETag": etag(row["version"])})

    @put("/{provider_key:str}", operation_id="putRuntimeEndpoint",
         opt=headers(honours=[IF_MATCH], sends=[ETAG, LOG_POSITION, LOCATION]),
         summary="Create or replace a manual runtime endpoint",
         description="201 when the provider key had no endpoint, 200 when it replaces one. The key is lower-cased; "
                     "`source` is always `manual`; `authToken` is stored for the executor but never returned.",
         responses={201: ResponseSpec(data_container=RuntimeEndpointView, description="Created"),
                    **problems(400, 401, 404, 409, 412)})
    async def put_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                      machine_id: FromPath[uuid.UUID], provider_key: FromPath[ProviderKey],
                      data: JSONBody[PutRuntimeEndpointRequest]) -> Response[RuntimeEndpointView]:
        outcome = await container_of(request).runtime.put_manual(
            ctx, machine_id, provider_key, url=data.url, auth_token=data.auth_token, metadata=data.metadata,
            expected_version=expected_version(request),
        )
        e = outcome.endpoint
        location = {"Location": f"/v1/machines/{machine_id}/runtime-endpoints/{e.provider_key}"}
        headers = write_headers(e.version, outcome.position, **(location if outcome.created else {}))
        return Response(RuntimeEndpointView.of(e), status_code=201 if outcome.created else 200, headers=headers)

    @delete("/{provider_key:str}", operation_id="deleteRuntimeEndpoint",
            opt=headers(honours=[IF_MATCH], sends=[LOG_POSITION]),
            status_code=204, summary="Delete a runtime endpoint",
            responses=problems(400, 401, 404, 409, 412))
    async def delete_one(self, request: Request[Any, Any, Any], ctx: NamedDependency[CommandContext],
                         machine_id: FromPath[uuid.UUID], provider_key: FromPath[ProviderKey]) -> Response[None]:
        outcome = await container_of(request).runtime.delete(ctx, machine_id, provider_key,
                                                             expected_version(request))
        return Response(None, status_code=204, headers=write_headers(None, outcome.position))
