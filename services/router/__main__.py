"""Entry point: `python -m services.router` runs the router service until SIGTERM.

With `router.workers` above 1 this process supervises that many workers on the same ports
(services/router/workers.py); each is started as `python -m services.router --worker INDEX`.
"""

from __future__ import annotations

import argparse

import uvloop

from services.common.config import load_config_or_exit
from services.router.server import serve
from services.router.workers import supervise


def main(argv: list[str] | None = None) -> None:
    """Runs the router service with the configuration from $CORRAL_CONFIG and CORRAL_* overrides."""
    parser = argparse.ArgumentParser(prog="corral-router", description=__doc__)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = load_config_or_exit("router")
    if args.worker is None and cfg.router.workers > 1:
        raise SystemExit(supervise(cfg))
    uvloop.run(serve(cfg, worker=args.worker))


if __name__ == "__main__":
    main()
