"""Pricing an order: the listing (named, or picked by discovery and resolve) on the order's own task.

The task is discovered and resolved in memory with the order, so the route it will execute, its explanation and
the price the intent asks for are one decision, recorded in one append with the order and the spend reservation.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from eventsourcing.domain import Aggregate

from app.services.task_discovery import Offer, screen
from app.services.task_policies import policy_screen, task_action
from app.services.tasks import TasksService
from domain.machines.aggregate import Machine
from domain.market.order_errors import ListingUnavailable
from domain.shared.context import CommandContext
from domain.shared.ids import derived_id
from domain.tasks.aggregate import Task
from domain.tasks.commands import CHEAPEST, Candidate, Constraints, CreateTask, Dropped, SellerRecord
from domain.tasks.errors import NoRoute
from domain.tasks.scoring import rank
from projections.catalogue_reader import Listing, get_listing


async def constraints_for_listing(pool: asyncpg.Pool, listing_id: uuid.UUID,
                                  timeout_ms: int) -> tuple[Listing, Constraints]:
    """The listing as the catalogue has it now, and the constraints that discover exactly its seller and provider
    key."""
    listing = await get_listing(pool, listing_id)
    if listing is None:
        raise ListingUnavailable(f"listing {listing_id} is not in the catalogue", listingId=str(listing_id))
    return listing, Constraints(sellers_allow=(listing.seller_machine_id,), provider_keys=(listing.provider_key,),
                                strategy=CHEAPEST, fallbacks=0, timeout_ms=timeout_ms)


def _named(listing: Listing) -> tuple[list[Offer], dict[uuid.UUID, SellerRecord]]:
    """A named listing's discovery: that one offer, and its seller's record, both from the row just read (the
    catalogue row carries the seller's stats), rather than three more reads of the catalogue and seller_stats
    whose other rows the order could not use (the payee is fixed)."""
    offer = Offer(candidate=Candidate(
        listing_id=listing.listing_id, node_id=listing.node_id, seller_machine_id=listing.seller_machine_id,
        seller_account_id=listing.seller_account_id, seller_name=listing.seller_name, capability=listing.capability,
        provider_key=listing.provider_key, price=listing.price), input_schema=listing.input_schema)
    r = listing.reputation
    record = SellerRecord(runs=r.runs, success_rate=r.success_rate, p50_latency_ms=r.p50_latency_ms,
                          cooling_down=listing.cooling_down)
    return [offer], {listing.seller_machine_id: record}


async def priced_task(ctx: CommandContext, tasks: TasksService, buyer: Machine, task_id: uuid.UUID, *,
                      capability: str, input: Any, constraints: Constraints,
                      listing: Listing | None) -> tuple[Task, Candidate, list[Aggregate]]:
    """The order's task, discovered and resolved to one seller (no fallbacks: the payee is fixed), the chosen
    candidate (its price is the order's) and what the `order` policy decision saves with it."""
    task = Task.submit(CreateTask(task_id=task_id, account_id=buyer.account_id, machine_id=buyer.id,
                                  capability=capability, input=input, constraints=constraints, auto=False), ctx.at)
    k = task.constraints
    listing_id = listing.listing_id if listing is not None else None
    known: dict[uuid.UUID, SellerRecord] | None = None
    if listing is not None:
        offers, known = _named(listing)
    else:
        offers = await tasks.offers.offers(capability=task.capability, provider_keys=k.provider_keys,
                                           max_price=k.max_price, sellers_allow=k.sellers_allow,
                                           sellers_deny=k.sellers_deny, exclude_machine_id=task.machine_id)
    candidates, dropped = screen(offers, task.input, task.machine_id, k)
    if listing_id is not None:
        dropped += [Dropped(listing_id=c.listing_id, seller_machine_id=c.seller_machine_id,
                            reason="not the ordered listing") for c in candidates if c.listing_id != listing_id]
        candidates = [c for c in candidates if c.listing_id == listing_id]
    # Picking among listings, forbidden ones leave as in a task's discovery; a named listing is judged by the
    # order's own decision below, so a refusal is a recorded POLICY_DENIED, not a vanished listing.
    if tasks.guard is not None and candidates and listing_id is None:
        governing = await tasks.guard.governing(task_action("resolve", task, buyer.labels, ctx.at))
        if governing:
            records = await tasks.reputation.records(list({c.seller_machine_id for c in candidates}))
            candidates, forbidden = policy_screen(task, buyer.labels, candidates, records, governing, ctx.at)
            dropped = [*dropped, *forbidden]
    task.discover(candidates, dropped, ctx.at)
    if known is not None:
        records = known
    else:
        records = await tasks.reputation.records(list({c.seller_machine_id for c in candidates})) if candidates else {}
    ranking = rank(task.candidates, records, k.strategy)
    try:
        step = task.plan_route(ranking)[0]
    except NoRoute as exc:
        if listing_id is None:
            raise
        mine = [d.reason for d in task.dropped if d.listing_id == listing_id]
        raise ListingUnavailable(f"listing {listing_id} cannot serve this order: "
                                 f"{mine[0] if mine else exc.detail}", listingId=str(listing_id)) from exc
    extras: list[Aggregate] = []
    if tasks.guard is not None:
        auth = await tasks.guard.authorize(
            ctx, task_action("order", task, buyer.labels, ctx.at, step, records.get(step.seller_machine_id)),
            task.id)
        extras = auth.extras
    task.resolve(derived_id("route", task.id, task.version), ranking, ctx.at)
    return task, step, extras
