"""What every scenario gets: where to write, smoke or full, whether LiteLLM runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Context:
    """A scenario's run settings.

    Attributes:
        out_dir: Where <scenario>.{json,md,png} go.
        work_dir: Scratch space (configs, raw records, logs).
        smoke: Seconds-long runs with tiny loads (checks the harness, not the systems).
        litellm: Run LiteLLM's proxy too (it is installed).
    """

    out_dir: Path
    work_dir: Path
    smoke: bool
    litellm: bool

    def pick(self, full: T, smoke: T) -> T:
        """`smoke` in a smoke run, else `full`."""
        return smoke if self.smoke else full

    def scratch(self, scenario: str) -> Path:
        """The scenario's scratch folder."""
        path = self.work_dir / scenario
        path.mkdir(parents=True, exist_ok=True)
        return path


def poisson_spec(target: dict[str, Any], rate_rps: float, duration_s: float, **kw: Any) -> dict[str, Any]:
    """A load-generator spec for Poisson arrivals of unique questions unless `requests` says otherwise."""
    spec: dict[str, Any] = {
        "target": target,
        "mode": "poisson",
        "rate_rps": rate_rps,
        "duration_s": duration_s,
        "warmup_s": kw.pop("warmup_s", 0.0),
        "max_outstanding": kw.pop("max_outstanding", 2000),
        "seed": kw.pop("seed", 1),
        "requests": kw.pop("requests", {"kind": "unique", "tag": "q"}),
    }
    spec.update(kw)
    return spec
