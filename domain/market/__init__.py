"""The market context: the double-entry ledger (wallets, escrow) and, on top of it, orders and payments."""
