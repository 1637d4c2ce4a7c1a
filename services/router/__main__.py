"""Entry point: `python -m services.router` runs the router service until SIGTERM."""

from __future__ import annotations

import uvloop

from services.router.server import serve


def main() -> None:
    """Runs the router service with the configuration from $CORRAL_CONFIG and CORRAL_* overrides."""
    uvloop.run(serve())


if __name__ == "__main__":
    main()
