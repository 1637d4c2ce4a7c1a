"""The near cache's bookkeeping: the byte bound and LRU order, TTLs, events, and going dark."""

from __future__ import annotations

from corral.v1 import cache_service_pb2, common_pb2

from services.cache.exact_store import event
from services.router.collector import _near_cache
from services.router.core import near_ttl_s
from services.router.http.encode import routing_headers
from services.router.near_cache import ENTRY_OVERHEAD_BYTES, Event, NearCache, parse_event

PAYLOAD_TYPE = "corral.v1.GenerateResponse"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def put(
    near: NearCache, name: str, *, size: int = 100, tenant: str = "a", model: str = "m:1", **kw: object
) -> bool:
    args: dict[str, object] = {
        "payload": b"x" * size,
        "payload_type": PAYLOAD_TYPE,
        "tenant": tenant,
        "model": model,
        "exact_key": f"k-{name}",
        "ttl_s": 60.0,
        "since": near.mark(),
    }
    args.update(kw)
    return near.put(name, **args)  # type: ignore[arg-type]


def live(max_bytes: int = 10_000, clock: Clock | None = None) -> NearCache:
    near = NearCache(max_bytes, clock=clock or Clock())
    near.go_live()
    return near


def test_bytes_never_exceed_the_bound_and_the_least_recent_goes_first() -> None:
    entry_bytes = 1000 + len(PAYLOAD_TYPE) + len("n00") + len("k-n00") + ENTRY_OVERHEAD_BYTES
    near = live(max_bytes=entry_bytes * 3)
    for i in range(3):
        assert put(near, f"n{i:02d}", size=1000)
    assert near.bytes == entry_bytes * 3 and near.evictions == 0
    assert near.get("n00") is not None  # n01 is now the least recently used
    for i in range(3, 20):
        assert put(near, f"n{i:02d}", size=1000)
        assert near.bytes <= near.max_bytes
    assert near.get("n00") is None and near.get("n01") is None
    assert near.get("n19") is not None and near.get("n18") is not None
    assert len(near) == 3 and near.evictions == 17
    assert near.bytes == sum(e.size for e in near._entries.values())


def test_a_touched_entry_survives_eviction() -> None:
    entry_bytes = 100 + len(PAYLOAD_TYPE) + 2 + 4 + ENTRY_OVERHEAD_BYTES
    near = live(max_bytes=entry_bytes * 2)
    put(near, "n0")
    put(near, "n1")
    near.get("n0")
    put(near, "n2")
    assert near.get("n0") is not None and near.get("n1") is None


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    near = live(max_bytes=500)
    assert not put(near, "big", size=1000)
    assert near.bytes == 0 and len(near) == 0


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    near = live()
    put(near, "n0", size=100)
    put(near, "n0", size=300)
    assert len(near) == 1 and near.bytes == near._entries["n0"].size


def test_an_entry_is_served_until_its_ttl_and_never_after() -> None:
    clock = Clock()
    near = live(clock=clock)
    put(near, "n0", ttl_s=2.0)
    clock.now += 1.9
    assert near.get("n0") is not None
    clock.now += 0.2
    assert near.get("n0") is None
    assert near.expirations == 1 and near.bytes == 0


def test_an_expired_or_timeless_answer_is_not_kept() -> None:
    near = live()
    assert not put(near, "n0", ttl_s=0.0)
    assert not put(near, "n1", ttl_s=-1.0)


def test_nothing_is_kept_or_served_while_not_subscribed() -> None:
    near = NearCache(10_000)
    assert not put(near, "n0")
    near.go_live()
    put(near, "n0")
    near.go_dark()
    assert near.get("n0") is None and near.bytes == 0 and near.clears == 1
    near.go_live()
    assert near.get("n0") is None


def test_a_store_event_drops_every_entry_of_its_key_only() -> None:
    near = live()
    put(near, "n0", exact_key="K")
    put(near, "n0-other-policy", exact_key="K")
    put(near, "n1", exact_key="J")
    assert near.apply(Event("a", "m:1", "K")) == 2
    assert near.get("n0") is None and near.get("n0-other-policy") is None
    assert near.get("n1") is not None


def test_invalidations_select_by_tenant_and_model() -> None:
    near = live()
    put(near, "a1", tenant="a", model="m:1")
    put(near, "a2", tenant="a", model="m:2")
    put(near, "b1", tenant="b", model="m:1")
    put(near, "d1", tenant="", model="m")
    assert near.apply(Event("a", "m:1", None)) == 1
    assert near.get("a2") is not None
    assert near.apply(Event("a", None, None)) == 1
    assert near.get("b1") is not None
    # NOTE: the empty tenant is the cache's "default" and a bare model name is ":latest".
    assert near.apply(Event("default", "m:latest", None)) == 1
    assert near.apply(Event(None, None, None)) == 1
    assert len(near) == 0


def test_a_reply_that_an_event_overtook_is_not_kept() -> None:
    near = live()
    since = near.mark()
    near.apply(Event("a", "m:1", "k-n0"))
    assert not put(near, "n0", since=since)
    # NOTE: an event about another key does not stop the reply from being kept.
    since = near.mark()
    near.apply(Event("a", "m:1", "other"))
    assert put(near, "n1", since=since)


def test_a_reply_sent_before_a_resubscription_is_not_kept() -> None:
    near = live()
    since = near.mark()
    near.go_dark()
    near.go_live()
    assert not put(near, "n0", since=since)


def test_an_unreadable_event_clears_everything() -> None:
    near = live()
    put(near, "n0")
    near.apply(parse_event(b"not json"))
    assert len(near) == 0


def test_the_cache_event_format_round_trips() -> None:
    assert parse_event(event("t", "m:1", "k")) == Event("t", "m:1", "k")
    assert parse_event(event("t", None, None)) == Event("t", None, None)
    assert parse_event(b'{"tenant": 3}') is None


def test_near_ttl_follows_expiry_and_max_age() -> None:
    entry = cache_service_pb2.CacheEntry()
    entry.created_at.FromSeconds(1000)
    entry.expires_at.FromSeconds(1100)
    assert near_ttl_s(entry, common_pb2.CachePolicy(), now=1040.0) == 60.0
    policy = common_pb2.CachePolicy()
    policy.max_age.FromSeconds(50)
    assert near_ttl_s(entry, policy, now=1040.0) == 10.0
    assert near_ttl_s(cache_service_pb2.CacheEntry(), common_pb2.CachePolicy(), now=1040.0) == 0.0


def test_the_header_names_a_near_hit_and_keeps_every_other_value() -> None:
    near = common_pb2.RoutingInfo(cache_outcome=common_pb2.CACHE_OUTCOME_EXACT_HIT, near_cache=True)
    assert routing_headers(near)["X-Corral-Cache"] == "near-hit"
    exact = common_pb2.RoutingInfo(cache_outcome=common_pb2.CACHE_OUTCOME_EXACT_HIT)
    assert routing_headers(exact)["X-Corral-Cache"] == "exact-hit"
    miss = common_pb2.RoutingInfo(cache_outcome=common_pb2.CACHE_OUTCOME_MISS)
    assert routing_headers(miss)["X-Corral-Cache"] == "miss"


def test_the_metrics_report_the_near_cache_counters() -> None:
    near = live(max_bytes=2 * (100 + len(PAYLOAD_TYPE) + 2 + 4 + ENTRY_OVERHEAD_BYTES))
    for name in ("n0", "n1", "n2"):
        put(near, name)
    near.get("n2")
    near.get("n0")
    near.apply(Event(None, None, "k-n2"))
    samples = {m.name: m.samples[0].value for m in _near_cache(near)}
    assert samples["corral_router_near_cache_hits"] == 1
    assert samples["corral_router_near_cache_misses"] == 1
    assert samples["corral_router_near_cache_evictions"] == 1
    assert samples["corral_router_near_cache_invalidated"] == 1
    assert samples["corral_router_near_cache_entries"] == 1
    assert samples["corral_router_near_cache_bytes"] == near.bytes > 0
    assert samples["corral_router_near_cache_live"] == 1
    near.go_dark()
    samples = {m.name: m.samples[0].value for m in _near_cache(near)}
    assert samples["corral_router_near_cache_clears"] == 1 and samples["corral_router_near_cache_live"] == 0
