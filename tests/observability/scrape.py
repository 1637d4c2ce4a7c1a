"""Scrapes a Prometheus endpoint and reads samples with prometheus_client's own text parser."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    """One sample: full name (with _total, _bucket, ...), labels and value."""

    name: str
    labels: dict[str, str]
    value: float


async def scrape(session: aiohttp.ClientSession, port: int) -> list[Sample]:
    """GETs /metrics on 127.0.0.1:port and parses every sample (the parse fails on malformed text)."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return [
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def names(samples: list[Sample]) -> set[str]:
    """Every sample name present."""
    return {s.name for s in samples}
