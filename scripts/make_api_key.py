"""Prints a new API key and the config entry that accepts it (only the key's SHA-256 is stored)."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from services.common.auth import ApiKeyEntry, hash_key, new_key


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m scripts.make_api_key --tenant acme [--role admin] [--rate 20 --burst 40]`."""
    parser = argparse.ArgumentParser(prog="make_api_key", description=__doc__)
    parser.add_argument("--tenant", default="default", help="tenant the key acts for (default: default)")
    parser.add_argument("--role", default="tenant", choices=("tenant", "service", "admin"))
    parser.add_argument("--name", default="", help="label shown in logs and errors")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0: no limit)")
    parser.add_argument("--burst", type=int, default=None, help="requests above the rate at once")
    parser.add_argument("--max-concurrent", type=int, default=0, help="requests in progress (0: no limit)")
    args = parser.parse_args(argv)
    key = new_key()
    try:
        entry = ApiKeyEntry(
            key_sha256=hash_key(key),
            name=args.name,
            tenant=args.tenant,
            role=args.role,
            rate_per_s=args.rate,
            burst=args.burst,
            max_concurrent=args.max_concurrent,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        parser.error(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print("config entry (auth.keys or the keys file):")
    print("  - " + json.dumps(entry.model_dump(exclude_defaults=True) | {"key_sha256": entry.key_sha256}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
