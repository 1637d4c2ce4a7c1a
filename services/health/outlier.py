"""Outlier ejection: consecutive errors, busy bursts and failure share eject a node for a growing time.

Shaped after Envoy's outlier detection (envoy/config/cluster/v3/outlier_detection.proto, see
https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier), whose defaults are:
  consecutive_5xx = 5                       -> OutlierConfig.consecutive_errors = 5
  consecutive_gateway_failure = 5 (503s)    -> OutlierConfig.consecutive_busy = 5
  failure_percentage_threshold = 85 %       -> failure_percentage_threshold = 0.85
  failure_percentage_request_volume = 50    -> failure_percentage_min_requests = 50
  base_ejection_time = 30 s                 -> base_ejection_time_s = 30
  max_ejection_time = 300 s                 -> max_ejection_time_s = 300
  max_ejection_percent = 10 %, but at least one host (gRPC's implementation matches, grpc-java #9489)
                                            -> max_ejection_share = 0.5, at least one node
Deviations: the share defaults to 50 % because a Corral fleet is a handful of nodes (10 % of 4 is
0 — only the "at least one" rule would act); ejection is decided on every outcome rather than in a
10 s sweep, so a failing node leaves the rotation within one report batch; and a node returns only
after its ejection time has passed AND an active probe has succeeded (Envoy's
successful_active_health_check_uneject_host, here always on). As in Envoy, the ejection
multiplier grows by one per ejection and shrinks by one for every base_ejection_time the node
stays in service.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from services.health.config import OutlierConfig


class EjectionReason(enum.Enum):
    """Why a node was ejected."""

    CONSECUTIVE_ERRORS = "consecutive errors"
    BUSY_BURST = "busy burst"
    FAILURE_PERCENTAGE = "failure percentage"


@dataclass
class EjectionState:
    """A node's ejection record."""

    ejected: bool = False
    ejected_until: float = 0.0
    ejection_count: int = 0
    multiplier: int = 0
    returned_at: float = 0.0
    reason: EjectionReason | None = None


class OutlierDetector:
    """Decides ejections and returns for the fleet, honouring the ejected-share cap."""

    def __init__(self, cfg: OutlierConfig) -> None:
        self.cfg = cfg

    def reason_to_eject(
        self, consecutive_errors: int, consecutive_busy: int, window_count: int, error_rate: float
    ) -> EjectionReason | None:
        """Returns why a node's current signals call for ejection, or None."""
        if consecutive_errors >= self.cfg.consecutive_errors:
            return EjectionReason.CONSECUTIVE_ERRORS
        if consecutive_busy >= self.cfg.consecutive_busy:
            return EjectionReason.BUSY_BURST
        if (
            window_count >= self.cfg.failure_percentage_min_requests
            and error_rate >= self.cfg.failure_percentage_threshold
        ):
            return EjectionReason.FAILURE_PERCENTAGE
        return None

    def may_eject(self, ejected_now: int, fleet_size: int) -> bool:
        """True when one more ejection keeps the ejected share within the cap (one is always allowed)."""
        allowed = max(1, math.floor(self.cfg.max_ejection_share * fleet_size))
        return ejected_now < allowed

    def eject(self, state: EjectionState, reason: EjectionReason, now: float) -> None:
        """Ejects the node for base * multiplier seconds (capped); the multiplier decays while in service."""
        if state.ejection_count and state.returned_at:
            served_s = max(0.0, now - state.returned_at)
            state.multiplier = max(0, state.multiplier - int(served_s // self.cfg.base_ejection_time_s))
        state.multiplier += 1
        state.ejection_count += 1
        duration_s = min(self.cfg.base_ejection_time_s * state.multiplier, self.cfg.max_ejection_time_s)
        state.ejected = True
        state.ejected_until = now + duration_s
        state.reason = reason

    def may_return(self, state: EjectionState, now: float) -> bool:
        """True when the ejection time has passed (the caller returns the node on a successful probe)."""
        return state.ejected and now >= state.ejected_until

    def restore(self, state: EjectionState, now: float) -> None:
        """Returns the node to service."""
        state.ejected = False
        state.returned_at = now
        state.reason = None
