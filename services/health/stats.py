"""Passive signals: outcomes reported by routers, folded into EWMAs and windowed error/busy rates."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field


class OutcomeKind(enum.Enum):
    """How one router attempt on a node ended, as far as the node's health is concerned."""

    SUCCESS = "success"
    # The node's fault: counts toward the error rate and consecutive errors.
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    TTFT_TIMEOUT = "ttft_timeout"
    SERVER = "server"
    STREAM_CUT = "stream_cut"
    MALFORMED = "malformed"
    # 503 "server busy": the node's queue is full; counts toward the busy rate and busy bursts.
    BUSY = "busy"
    # Not the node's fault (a 4xx or a client cancel): recorded, but neither good nor bad.
    IGNORED = "ignored"

    @property
    def is_node_error(self) -> bool:
        """True for kinds that say the node is failing."""
        return self not in (OutcomeKind.SUCCESS, OutcomeKind.BUSY, OutcomeKind.IGNORED)

    @property
    def spent_full_time(self) -> bool:
        """True when the attempt's latency is a real (lower bound of) service time, not a fast failure."""
        return self in (OutcomeKind.SUCCESS, OutcomeKind.TIMEOUT, OutcomeKind.TTFT_TIMEOUT)


@dataclass(frozen=True)
class Outcome:
    """One router attempt on one node (already validated; model name normalised)."""

    node_id: str
    model: str
    kind: OutcomeKind
    latency_ms: float
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    inflight: int = 0


def outcome_problem(latency_ms: float, ttft_ms: float, tokens_per_s: float, inflight: int) -> str:
    """Returns why the numbers of an outcome cannot be used, or "" when they can."""
    for name, value in (("latency_ms", latency_ms), ("ttft_ms", ttft_ms), ("tokens_per_s", tokens_per_s)):
        if not math.isfinite(value) or value < 0:
            return f"{name} must be a finite number >= 0"
    if inflight < 0:
        return "inflight must be >= 0"
    return ""


class Ewma:
    """Exponentially weighted moving average; the first sample sets the value."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value = 0.0
        self.samples = 0

    def add(self, sample: float) -> None:
        """Folds in one sample."""
        self.value = sample if self.samples == 0 else self.value + self.alpha * (sample - self.value)
        self.samples += 1

    def get(self, prior: float) -> float:
        """The average, or `prior` when there is no sample yet."""
        return self.value if self.samples else prior


class OutcomeWindow:
    """The last `size` outcomes younger than `max_age_s`, for error and busy rates."""

    def __init__(self, size: int, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._events: deque[tuple[float, bool, bool]] = deque(maxlen=size)

    def add(self, now: float, is_error: bool, is_busy: bool) -> None:
        """Records an outcome at `now` (seconds)."""
        self._events.append((now, is_error, is_busy))

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self._max_age_s:
            self._events.popleft()

    def count(self, now: float) -> int:
        """Outcomes in the window."""
        self._trim(now)
        return len(self._events)

    def error_rate(self, now: float) -> float:
        """Share of node errors in the window (0 when empty)."""
        self._trim(now)
        if not self._events:
            return 0.0
        return sum(1 for _, err, _ in self._events if err) / len(self._events)

    def busy_rate(self, now: float) -> float:
        """Share of busy answers in the window (0 when empty)."""
        self._trim(now)
        if not self._events:
            return 0.0
        return sum(1 for _, _, busy in self._events if busy) / len(self._events)

    def clear(self) -> None:
        """Forgets every outcome (a node back from ejection starts on probation with a clean slate)."""
        self._events.clear()


class ModelStats:
    """Per (node, model) averages and rates."""

    def __init__(self, alpha: float, window_size: int, window_s: float) -> None:
        self.latency_ms = Ewma(alpha)
        self.ttft_ms = Ewma(alpha)
        self.tokens_per_s = Ewma(alpha)
        self.window = OutcomeWindow(window_size, window_s)

    def add(self, outcome: Outcome, now: float) -> None:
        """Folds in one outcome."""
        if outcome.kind is OutcomeKind.IGNORED:
            return
        # NOTE: fast failures do not feed the latency average: a node that fails in 2 ms must not
        # look fast. Timeouts do, since the router really waited that long.
        if outcome.kind.spent_full_time and outcome.latency_ms > 0:
            self.latency_ms.add(outcome.latency_ms)
        if outcome.kind is OutcomeKind.SUCCESS:
            if outcome.ttft_ms > 0:
                self.ttft_ms.add(outcome.ttft_ms)
            if outcome.tokens_per_s > 0:
                self.tokens_per_s.add(outcome.tokens_per_s)
        self.window.add(now, outcome.kind.is_node_error, outcome.kind is OutcomeKind.BUSY)


@dataclass
class NodeStats:
    """Per-node passive state: the window, the runs of failures and the reported in-flight counts."""

    window: OutcomeWindow
    models: dict[str, ModelStats] = field(default_factory=dict)
    consecutive_errors: int = 0
    consecutive_busy: int = 0
    # reporter stream key -> (in-flight count, when reported)
    inflight_by_reporter: dict[str, tuple[int, float]] = field(default_factory=dict)

    def add(
        self, outcome: Outcome, reporter: str, now: float, alpha: float, window_size: int, window_s: float
    ) -> None:
        """Folds one outcome into the node's and the model's state."""
        self.inflight_by_reporter[reporter] = (outcome.inflight, now)
        stats = self.models.get(outcome.model)
        if stats is None:
            stats = self.models[outcome.model] = ModelStats(alpha, window_size, window_s)
        stats.add(outcome, now)
        kind = outcome.kind
        if kind is OutcomeKind.IGNORED:
            return
        self.window.add(now, kind.is_node_error, kind is OutcomeKind.BUSY)
        if kind is OutcomeKind.SUCCESS:
            self.consecutive_errors = 0
            self.consecutive_busy = 0
        elif kind is OutcomeKind.BUSY:
            self.consecutive_busy += 1
        else:
            self.consecutive_errors += 1
            self.consecutive_busy = 0

    def inflight(self, now: float, ttl_s: float) -> int:
        """Sum of the latest in-flight count of every reporter heard from within `ttl_s`."""
        stale = [key for key, (_, at) in self.inflight_by_reporter.items() if now - at > ttl_s]
        for key in stale:
            del self.inflight_by_reporter[key]
        return sum(count for count, _ in self.inflight_by_reporter.values())

    def forget_reporter(self, reporter: str) -> bool:
        """Drops a reporter's in-flight count (its stream closed); True when it had one."""
        return self.inflight_by_reporter.pop(reporter, None) is not None

    def reset_rates(self) -> None:
        """Clears the windows and runs (the node returns from ejection on probation)."""
        self.window.clear()
        for stats in self.models.values():
            stats.window.clear()
        self.consecutive_errors = 0
        self.consecutive_busy = 0
