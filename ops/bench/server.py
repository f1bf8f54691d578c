"""The API process the HTTP phase drives: the real app on uvicorn, configured from MM_* like `mm api`."""

from __future__ import annotations

import argparse

import uvicorn

from app.api.app import create_app
from app.container import Container
from app.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings()
    dsn = settings.database_url
    if not dsn:
        raise SystemExit("MM_DATABASE_URL must name the bench database")
    app = create_app(settings, open_container=lambda: Container.open(settings, dsn, stateless_sessions=True))
    # As `mm api` runs it (access log off), but bound to loopback only.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
