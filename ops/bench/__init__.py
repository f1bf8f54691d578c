"""One-command performance report: event-store append vs raw asyncpg, HTTP commands, projection catch-up."""
