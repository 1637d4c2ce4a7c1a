"""Run-time fault state of a node, and parsing of `--fault` command-line specs."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sim.config import Faults

RUNNER_ERROR = "llama runner process has terminated: exit status 2"

_ALIASES = {
    "slow": "slow_factor",
    "error": "error_rate",
    "errors": "error_rate",
    "busy": "busy_count",
    "cut": "cut_after_tokens",
    "latency": "extra_latency_ms",
    "latency_ms": "extra_latency_ms",
    "down": "refuse",
}


class FaultState:
    """The faults in force on one node; changes notify listeners (the node reopens its socket)."""

    def __init__(self, initial: Faults, seed: int) -> None:
        self.current = initial.model_copy()
        self._rng = random.Random(f"faults:{seed}")
        self._listeners: list[Callable[[Faults, Faults], None]] = []

    @property
    def any_request_fault(self) -> bool:
        """True when some fault may change how a request is answered (fast check for the hot path)."""
        f = self.current
        return (
            f.hang
            or f.malformed
            or f.error_rate > 0
            or f.busy_count != 0
            or f.extra_latency_ms > 0
            or f.cut_after_tokens is not None
        )

    def add_listener(self, listener: Callable[[Faults, Faults], None]) -> None:
        """Call `listener(old, new)` after every change."""
        self._listeners.append(listener)

    def update(self, **changes: Any) -> Faults:
        """Merge changes (field names or their short aliases) into the current faults.

        Raises:
            ValueError: naming the field when a name or value is invalid.
        """
        merged = self.current.model_dump()
        for name, value in changes.items():
            field = _ALIASES.get(name, name)
            if field not in Faults.model_fields:
                known = ", ".join(sorted(Faults.model_fields))
                raise ValueError(f"unknown fault {name!r}; known: {known}")
            merged[field] = value
        self._replace(Faults.model_validate(merged))
        return self.current

    def clear(self) -> Faults:
        """Back to a healthy node."""
        self._replace(Faults())
        return self.current

    def _replace(self, new: Faults) -> None:
        old, self.current = self.current, new
        for listener in self._listeners:
            listener(old, new)

    def take_error(self) -> bool:
        """Decide (deterministically for the node's seed) whether this request fails with 500."""
        rate = self.current.error_rate
        return rate > 0 and self._rng.random() < rate

    def take_busy(self) -> bool:
        """Consume one request of a busy burst; True means answer 503."""
        count = self.current.busy_count
        if count == 0:
            return False
        if count > 0:
            self.current = self.current.model_copy(update={"busy_count": count - 1})
        return True


def parse_fault_spec(spec: str) -> dict[str, Any]:
    """Parse a `--fault` argument: `hang`, `refuse`, `malformed`, `slow=3`, `error_rate=0.2`, `busy=5`,
    `cut=10`, `latency_ms=200`; several may be joined with commas.

    Raises:
        ValueError: naming the fault when it is unknown or its value is not a number.
    """
    result: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, raw = part.partition("=")
        field = _ALIASES.get(name.strip(), name.strip())
        if field not in Faults.model_fields:
            known = ", ".join(sorted([*Faults.model_fields, *_ALIASES]))
            raise ValueError(f"unknown fault {name!r}; known: {known}")
        annotation = Faults.model_fields[field].annotation
        if not raw:
            if annotation is not bool:
                raise ValueError(f"fault {field!r} needs a value, e.g. {field}=3")
            result[field] = True
            continue
        try:
            if annotation is bool:
                result[field] = raw.strip().lower() in {"1", "true", "yes", "on"}
            elif field in {"busy_count", "cut_after_tokens"}:
                result[field] = int(raw)
            else:
                result[field] = float(raw)
        except ValueError:
            raise ValueError(f"fault {field!r}: {raw!r} is not a number") from None
    return result
