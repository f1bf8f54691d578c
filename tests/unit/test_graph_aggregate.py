"""MachineGraph aggregate, given/when/then on events: given past events, when a decision runs, then these events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from eventsourcing.domain import Aggregate, Snapshot

from app.store.mapper import event_type, rebuild, to_data
from app.store.snapshots import _transcoder
from app.store.types import RecordedEvent
from domain.graph import rules
from domain.graph.aggregate import MachineGraph, data_of, graph_id_of
from domain.graph.commands import CreateEdge, CreateNode, OpenGraph, ReviseEdge, ReviseNode
from domain.graph.errors import EdgeExists, GraphLimitReached, NodeMissing
from domain.shared.errors import DomainError, NotFound, ValidationFailed
from tests.factories import FIXED_AT

T0, T1 = FIXED_AT, FIXED_AT + timedelta(minutes=1)
MACHINE, ACCOUNT = uuid.uuid4(), uuid.uuid4()
A, B, C = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
CAPABILITY = {"name": "Summarise", "price": {"amount": 250, "currency": "USD"}, "providerKey": "OpenAI"}


def node(node_id: uuid.UUID, node_type: str = "resource", **fields: Any) -> Callable[[MachineGraph], None]:
    cmd = CreateNode(node_id=node_id, node_type=node_type, label=fields.pop("label", "n"), **fields)
    return lambda g: g.create_node(cmd, T0)


def edge(edge_id: uuid.UUID, src: uuid.UUID, dst: uuid.UUID, edge_type: str = "uses",
         **fields: Any) -> Callable[[MachineGraph], None]:
    cmd = CreateEdge(edge_id=edge_id, from_node_id=src, to_node_id=dst, edge_type=edge_type, **fields)
    return lambda g: g.create_edge(cmd, T0)


def given(*decisions: Callable[[MachineGraph], None]) -> MachineGraph:
    g = MachineGraph.open(OpenGraph(graph_id=graph_id_of(MACHINE), account_id=ACCOUNT, machine_id=MACHINE), T0)
    for decide in decisions:
        decide(g)
    g.collect_events()
    return g


def when(g: MachineGraph, decide: Callable[[MachineGraph], None]) -> list[Aggregate.Event]:
    decide(g)
    return list(g.collect_events())


def refused(g: MachineGraph, decide: Callable[[MachineGraph], None], error: type[DomainError]) -> DomainError:
    with pytest.raises(error) as caught:
        decide(g)
    assert g.collect_events() == [], "a refused decision records nothing"
    return caught.value


def names(events: list[Aggregate.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- opening and nodes -----------------------------------------------------------------------------


def test_the_first_node_is_recorded_with_the_opening_and_defaults_to_draft() -> None:
    g = MachineGraph.open(OpenGraph(graph_id=graph_id_of(MACHINE), account_id=ACCOUNT, machine_id=MACHINE), T0)
    events = when(g, node(A, label="GPU pool", data={"gpus": 8}))
    assert names(events) == ["Opened", "NodeCreated"]
    opened, created = events
    assert isinstance(opened, MachineGraph.Opened) and opened.machine_id == MACHINE and opened.account_id == ACCOUNT
    assert isinstance(created, MachineGraph.NodeCreated)
    assert (created.node_id, created.status, created.label, created.data) == (A, "draft", "GPU pool", {"gpus": 8})
    assert g.id == graph_id_of(MACHINE) and g.node(A)["version"] == 1


def test_a_capability_is_normalised() -> None:
    (created,) = when(given(), node(A, "capability", data=CAPABILITY))
    assert isinstance(created, MachineGraph.NodeCreated)
    assert created.data == {**CAPABILITY, "providerKey": "openai", "inputSchema": {}}


@pytest.mark.parametrize("data", [
    {},
    {**CAPABILITY, "name": ""},
    {**CAPABILITY, "name": "   "},
    {**CAPABILITY, "name": 7},
    {**CAPABILITY, "price": 250},
    {**CAPABILITY, "price": {"amount": 2.5, "currency": "USD"}},
    {**CAPABILITY, "price": {"amount": True, "currency": "USD"}},
    {**CAPABILITY, "price": {"amount": -1, "currency": "USD"}},
    {**CAPABILITY, "price": {"amount": 2**60, "currency": "USD"}},
    {**CAPABILITY, "price": {"amount": 1, "currency": "usd"}},
    {**CAPABILITY, "price": {"amount": 1, "currency": 840}},
    {**CAPABILITY, "price": {"amount": 1}},
    {**CAPABILITY, "price": {"amount": 1, "currency": "USD", "extra": 1}},
    {k: v for k, v in CAPABILITY.items() if k != "providerKey"},
    {**CAPABILITY, "providerKey": "-bad"},
    {**CAPABILITY, "providerKey": "has space"},
    {**CAPABILITY, "providerKey": 3},
    {**CAPABILITY, "inputSchema": []},
])
def test_invalid_capability_data_is_refused(data: dict[str, Any]) -> None:
    error = refused(given(), node(A, "capability", data=data), ValidationFailed)
    assert error.extra["field"].startswith("data.")


@pytest.mark.parametrize(("fields", "field"), [
    ({"node_type": "widget"}, "type"),
    ({"label": " "}, "label"),
    ({"label": "x" * (rules.MAX_LABEL + 1)}, "label"),
    ({"status": "retired"}, "status"),
    ({"data": {f"k{i}": i for i in range(rules.MAX_DATA_KEYS + 1)}}, "data"),
    ({"data": {"blob": "x" * rules.MAX_NODE_DATA_BYTES}}, "data"),
    ({"data": {"k" * (rules.MAX_KEY_LENGTH + 1): 1}}, "data"),
    ({"data": {"deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}}, "data"),
    ({"data": {"x": float("inf")}}, "data"),
])
def test_node_fields_are_bounded(fields: dict[str, Any], field: str) -> None:
    node_type = fields.pop("node_type", "resource")
    error = refused(given(), node(A, node_type, **fields), ValidationFailed)
    assert error.extra["field"] == field


def test_the_node_limit_is_a_stable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "MAX_NODES", 2)
    g = given(node(A), node(B))
    assert refused(g, node(C), GraphLimitReached).code == "GRAPH_LIMIT_REACHED"


def test_revising_records_only_what_changed_and_merges_data_shallowly() -> None:
    g = given(node(A, label="pool", data={"gpus": 8, "zone": "eu", "tags": {"a": 1}}))
    (revised,) = when(g, lambda g: g.revise_node(
        ReviseNode(node_id=A, label="pool", status="active", data={"zone": None, "tags": {"b": 2}}), T1))
    assert isinstance(revised, MachineGraph.NodeRevised)
    assert (revised.label, revised.node_type, revised.status) == (None, None, "active")
    assert revised.data == {"gpus": 8, "tags": {"b": 2}}  # zone removed; tags replaced whole, not deep-merged
    n = g.node(A)
    assert (n["status"], n["version"], n["updated_at"], n["created_at"]) == ("active", 2, T1, T0)
    assert data_of(n) == {"gpus": 8, "tags": {"b": 2}}


def test_a_revision_that_changes_nothing_records_nothing() -> None:
    g = given(node(A, label="pool", status="active", data={"gpus": 8}))
    assert when(g, lambda g: g.revise_node(
        ReviseNode(node_id=A, label="pool", status="active", data={"gpus": 8, "gone": None}), T1)) == []
    assert g.node(A)["version"] == 1


def test_the_merged_capability_is_validated_again() -> None:
    g = given(node(A, "capability", data=CAPABILITY))
    refused(g, lambda g: g.revise_node(ReviseNode(node_id=A, data={"price": None}), T1), ValidationFailed)
    (ok,) = when(g, lambda g: g.revise_node(ReviseNode(node_id=A, data={"providerKey": "My-GPU.v1"}), T1))
    assert isinstance(ok, MachineGraph.NodeRevised) and ok.data is not None
    assert ok.data["providerKey"] == "my-gpu.v1" and ok.data["price"] == CAPABILITY["price"]


def test_becoming_a_capability_needs_capability_data() -> None:
    g = given(node(A, data={"note": "x"}))
    refused(g, lambda g: g.revise_node(ReviseNode(node_id=A, node_type="capability"), T1), ValidationFailed)
    (ok,) = when(g, lambda g: g.revise_node(ReviseNode(node_id=A, node_type="capability", data=CAPABILITY), T1))
    assert isinstance(ok, MachineGraph.NodeRevised) and ok.node_type == "capability"


def test_unknown_nodes_and_edges_are_not_found() -> None:
    g = given(node(A))
    refused(g, lambda g: g.revise_node(ReviseNode(node_id=B, label="x"), T1), NotFound)
    refused(g, lambda g: g.delete_node(B, T1), NotFound)
    refused(g, lambda g: g.revise_edge(ReviseEdge(edge_id=B, edge_type="x"), T1), NotFound)
    refused(g, lambda g: g.delete_edge(B, T1), NotFound)


def test_deleting_a_node_deletes_its_edges_first_each_as_an_event() -> None:
    e1, e2, e3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    g = given(node(A), node(B), node(C), edge(e1, A, B), edge(e2, C, A), edge(e3, B, C))
    events = when(g, lambda g: g.delete_node(A, T1))
    assert names(events) == ["EdgeDeleted", "EdgeDeleted", "NodeDeleted"]
    assert {e.edge_id for e in events[:2]} == {e1, e2}  # type: ignore[attr-defined]
    assert all(e.with_node_id == A for e in events[:2])  # type: ignore[attr-defined]
    assert set(g.nodes) == {str(B), str(C)} and set(g.edges) == {str(e3)}


# --- edges -----------------------------------------------------------------------------------------


def test_an_edge_joins_two_nodes_of_the_graph() -> None:
    e = uuid.uuid4()
    (created,) = when(given(node(A), node(B)), edge(e, A, B, "depends-on", data={"weight": 2}))
    assert isinstance(created, MachineGraph.EdgeCreated)
    assert (created.from_node_id, created.to_node_id, created.edge_type, created.data) == (A, B, "depends-on",
                                                                                          {"weight": 2})


def test_edge_rules() -> None:
    g = given(node(A), node(B), edge(uuid.uuid4(), A, B, "uses"))
    assert refused(g, edge(uuid.uuid4(), A, A), ValidationFailed).extra["field"] == "to"
    missing = refused(g, edge(uuid.uuid4(), A, C), NodeMissing)
    assert missing.code == "GRAPH_NODE_MISSING" and missing.extra == {"field": "to", "nodeId": str(C)}
    assert refused(g, edge(uuid.uuid4(), A, B, "uses"), EdgeExists).code == "GRAPH_EDGE_EXISTS"
    refused(g, edge(uuid.uuid4(), A, B, "Uses"), ValidationFailed)
    refused(g, edge(uuid.uuid4(), A, B, "feeds", data={"x": "y" * rules.MAX_EDGE_DATA_BYTES}), ValidationFailed)
    assert names(when(g, edge(uuid.uuid4(), B, A, "uses"))) == ["EdgeCreated"]  # the other direction is another edge
    assert names(when(g, edge(uuid.uuid4(), A, B, "feeds"))) == ["EdgeCreated"]  # and so is another type


def test_the_edge_limit_is_a_stable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "MAX_EDGES", 1)
    g = given(node(A), node(B), edge(uuid.uuid4(), A, B))
    refused(g, edge(uuid.uuid4(), B, A), GraphLimitReached)


def test_revising_an_edge() -> None:
    e, other = uuid.uuid4(), uuid.uuid4()
    g = given(node(A), node(B), edge(e, A, B, "uses", data={"w": 1, "note": "x"}), edge(other, A, B, "feeds"))
    refused(g, lambda g: g.revise_edge(ReviseEdge(edge_id=e, edge_type="feeds"), T1), EdgeExists)
    (revised,) = when(g, lambda g: g.revise_edge(ReviseEdge(edge_id=e, edge_type="calls", data={"note": None}), T1))
    assert isinstance(revised, MachineGraph.EdgeRevised)
    assert (revised.edge_type, revised.data) == ("calls", {"w": 1})
    assert g.edge(e)["version"] == 2
    assert when(g, lambda g: g.revise_edge(ReviseEdge(edge_id=e, edge_type="calls", data={}), T1)) == []
    (deleted,) = when(g, lambda g: g.delete_edge(e, T1))
    assert isinstance(deleted, MachineGraph.EdgeDeleted) and deleted.with_node_id is None


# --- persistence -----------------------------------------------------------------------------------


def _recorded(events: list[Aggregate.Event]) -> list[RecordedEvent]:
    return [RecordedEvent(position=i, tx_id=1, event_id=uuid.uuid4(), stream_id=e.originator_id,
                          stream_type=MachineGraph.TOPIC, version=e.originator_version, type=event_type(e),
                          data=to_data(e), metadata={}, recorded_at=T0) for i, e in enumerate(events, 1)]


def test_replaying_the_stored_events_rebuilds_the_same_graph() -> None:
    e = uuid.uuid4()
    g = MachineGraph.open(OpenGraph(graph_id=graph_id_of(MACHINE), account_id=ACCOUNT, machine_id=MACHINE), T0)
    for decide in (node(A, "capability", data=CAPABILITY), node(B), edge(e, A, B),
                   lambda g: g.revise_node(ReviseNode(node_id=B, data={"k": [1, {"x": None}]}), T1),
                   lambda g: g.revise_edge(ReviseEdge(edge_id=e, data={"w": 3}), T1), node(C),
                   lambda g: g.delete_node(C, T1)):
        decide(g)
    events = list(g.collect_events())
    assert all(event_type(ev).startswith("graph:MachineGraph.") for ev in events)
    replayed = rebuild(_recorded(events))
    assert isinstance(replayed, MachineGraph)
    assert (replayed.nodes, replayed.edges, replayed.version) == (g.nodes, g.edges, g.version)
    assert (replayed.account_id, replayed.machine_id) == (ACCOUNT, MACHINE)


def test_a_snapshot_round_trips_even_data_shaped_like_the_transcoders_tags() -> None:
    tricky = {"_type_": "uuid_hex", "_data_": "not-a-uuid"}
    g = given(node(A, data={"t": tricky}), node(B), edge(uuid.uuid4(), A, B, data={"t": tricky}))
    snapshot = Snapshot.take(g)
    state = _transcoder.decode(_transcoder.encode(snapshot.state))
    restored = Snapshot(originator_id=g.id, originator_version=g.version, timestamp=T0, topic=snapshot.topic,
                        state=state).mutate(None)
    assert isinstance(restored, MachineGraph)
    assert restored.nodes == g.nodes and restored.edges == g.edges
    assert data_of(restored.node(A)) == {"t": tricky}
    assert MachineGraph.SNAPSHOT_EVERY == 100
