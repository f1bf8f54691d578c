"""An order's money on the ledger: the escrow decisions (LedgerService) for a hold and for a settlement's Split.

Nothing is saved here: the wallets (and seller credit streams) returned go into the order's own append.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from eventsourcing.domain import Aggregate

from app.services.ledger import LedgerService
from domain.market.credits import credit_shard, credits_id
from domain.market.ledger import Wallet, wallet_id
from domain.market.order import Order
from domain.market.order_terms import Split
from domain.shared.context import CommandContext


class Escrow:
    def __init__(self, ledger: LedgerService) -> None:
        self.ledger = ledger

    async def hold(self, ctx: CommandContext, order: Order, wallet: Wallet | None = None) -> list[Aggregate]:
        """The buyer's available -> escrow for the order's price; INSUFFICIENT_FUNDS records nothing.
        `wallet`: the buyer's wallet as the caller has just read it (None: read it here)."""
        return await self.ledger.hold(ctx, order.account_id, order.id, order.price, wallet)

    def wallet_id(self, order: Order) -> uuid.UUID:
        """The stream of the buyer's wallet that holds this order's escrow."""
        return wallet_id(order.account_id, order.price.currency)

    async def settle(self, ctx: CommandContext, order: Order, split: Split | None,
                     prefetched: Mapping[uuid.UUID, Aggregate | None] | None = None) -> list[Aggregate]:
        """The escrow leaves as the split says: refunded in full, or released (fee out of the seller's part) with
        the rest refunded. The wallet refuses a second settlement (ESCROW_NOT_HELD), so each happens once.
        `prefetched`: streams read with the order (by id; None: no such stream); the wallet and the credit shard
        are read here only when they are not among them."""
        if split is None:
            return []
        pre = prefetched or {}
        wallet = wallet_id(order.account_id, split.currency)
        credits = credits_id(order.seller_account_id, split.currency, credit_shard(order.id))
        if not split.released:
            return await self.ledger.refund(ctx, order.account_id, order.id, split.currency,
                                            (pre[wallet],) if wallet in pre else None)
        loaded = (pre[wallet], pre[credits]) if wallet in pre and credits in pre else None
        return await self.ledger.split(ctx, order.account_id, order.id, split.currency, order.seller_account_id,
                                       split.released, split.fee, loaded)
