"""Entry point: `python -m services.cache` runs the cache service until SIGTERM."""

from __future__ import annotations

import uvloop

from services.cache.server import serve


def main() -> None:
    """Runs the cache service with the configuration from $CORRAL_CONFIG and CORRAL_* overrides."""
    uvloop.run(serve())


if __name__ == "__main__":
    main()
