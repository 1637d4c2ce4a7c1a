"""Entry point: `python -m services.prewarm` runs the prewarm service until SIGTERM."""

from __future__ import annotations

import uvloop

from services.prewarm.server import serve


def main() -> None:
    """Runs the prewarm service with the configuration from $CORRAL_CONFIG and CORRAL_* overrides."""
    uvloop.run(serve())


if __name__ == "__main__":
    main()
