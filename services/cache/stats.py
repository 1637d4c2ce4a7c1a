"""Counters and latency percentiles of the cache, since the process started."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TierCounters:
    """Hits, misses, stores and recent lookup latencies of one tier."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile of recent lookup latencies (0 when there are none)."""
        if not self.latencies_ms:
            return 0.0
        return float(np.percentile(np.fromiter(self.latencies_ms, dtype=np.float64), q))


@dataclass
class CacheStats:
    """Everything Stats reports that the process counts itself."""

    exact: TierCounters = field(default_factory=TierCounters)
    semantic: TierCounters = field(default_factory=TierCounters)
    # NOTE: the embedding cache counts texts (one Embed call of 5 texts is 5 lookups), apart from answers.
    embeddings: TierCounters = field(default_factory=TierCounters)
    coalesced: int = 0
    # NOTE: question vectors of the semantic tier read from the embedding cache (no embedding call).
    shared_vectors: int = 0
    guard_rejections: int = 0
    guard_reasons: Counter[str] = field(default_factory=Counter)
    degraded_lookups: int = 0
    bypassed: int = 0
    # NOTE: lookups that skipped the semantic tier (or every tier), by keys.SKIP_CATEGORIES.
    semantic_skips: Counter[str] = field(default_factory=Counter)
