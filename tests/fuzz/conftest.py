"""Hypothesis profiles and in-process servers (real domain code, real stores) for the fuzz tests."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# NOTE: the "ci" profile is the default: about 100 examples per RPC and route, thousands in all
# (tests/fuzz runs in well under two minutes on 2 cores). CORRAL_FUZZ_EXAMPLES raises it locally.
_EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "100"))
settings.register_profile(
    "ci",
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=False,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
settings.load_profile(os.environ.get("CORRAL_FUZZ_PROFILE", "ci"))


def examples(share: float, floor: int) -> int:
    """A test's share of the profile's examples (heavier tests take fewer)."""
    return max(floor, int(_EXAMPLES * share))
