"""OpenAPI links: which operation's response feeds which operation's parameters (stateful clients, fuzzers).

Each link goes where the id is useful in the resource's current state: a just-registered machine can be
read, revised, challenged or retired; its graph, agents and endpoints wait until it is active.
"""

from __future__ import annotations

Params = dict[str, str]
Targets = list[tuple[str, Params]]

_MACHINE = {"machine_id": "$response.body#/id"}
_SAME_MACHINE = {"machine_id": "$request.path.machine_id"}


def _each(operation_ids: str, parameters: Params) -> Targets:
    return [(operation_id, parameters) for operation_id in operation_ids.split()]


_TASK = {**_SAME_MACHINE, "task_id": "$response.body#/id"}
_ENDPOINT = {**_SAME_MACHINE, "provider_key": "$response.body#/providerKey"}

# (operationId, status) -> [(target operationId, {parameter: runtime expression})]
LINKS: dict[tuple[str, int], Targets] = {
    ("registerMachine", 201): _each("getMachine reviseMachine issueIdentityChallenge retireMachine", _MACHINE),
    ("issueIdentityChallenge", 201): _each("verifyIdentity getMachine", _SAME_MACHINE),
    ("verifyIdentity", 200): _each("activateMachine getMachine", _MACHINE),
    ("activateMachine", 200): _each(
        "getMachine suspendMachine retireMachine getGraph createGraphNode enrollAgent listAgents putRuntimeEndpoint"
        " listRuntimeEndpoints createTask listTasks listRoutes listOutcomes", _MACHINE),
    ("suspendMachine", 200): _each("reactivateMachine retireMachine getMachine", _MACHINE),
    ("createGraphNode", 201): _each("getGraphNode reviseGraphNode deleteGraphNode",
                                    {**_SAME_MACHINE, "node_id": "$response.body#/id"})
    + _each("getGraph", _SAME_MACHINE),
    ("createGraphEdge", 201): _each("getGraphEdge reviseGraphEdge deleteGraphEdge",
                                    {**_SAME_MACHINE, "edge_id": "$response.body#/id"}),
    ("enrollAgent", 201): _each("getAgent revokeAgent", {**_SAME_MACHINE, "agent_id": "$response.body#/agent/id"}),
    ("putRuntimeEndpoint", 201): _each("getRuntimeEndpoint deleteRuntimeEndpoint", _ENDPOINT),
    ("putRuntimeEndpoint", 200): _each("getRuntimeEndpoint deleteRuntimeEndpoint", _ENDPOINT),
    ("createTask", 201): _each("getTask discoverTask resolveTask executeTask cancelTask", _TASK),
    ("discoverTask", 200): _each("resolveTask getTask cancelTask", _TASK),
    ("resolveTask", 201): _each("executeTask getTask", {**_SAME_MACHINE, "task_id": "$request.path.task_id"})
    + _each("getRoute", {**_SAME_MACHINE, "route_id": "$response.body#/id"}),
    ("openAccount", 201): _each("getAccount listApiKeys issueApiKey", {"account_id": "$response.body#/account/id"}),
    ("issueApiKey", 201): _each("revokeApiKey", {"account_id": "$request.path.account_id",
                                                 "key_id": "$response.body#/id"}),
    ("getMyAccount", 200): _each("getAccount listApiKeys issueApiKey", {"account_id": "$response.body#/id"}),
}
