"""Entry point: `python -m services.health` runs the health service until SIGTERM."""

from __future__ import annotations

import uvloop

from services.health.server import serve


def main() -> None:
    """Runs the health service with the configuration from $CORRAL_CONFIG and CORRAL_* overrides."""
    uvloop.run(serve())


if __name__ == "__main__":
    main()
