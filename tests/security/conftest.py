"""Fixtures: a local CA with server and client certificates (scripts/make_certs.py) per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.make_certs import make_all
from tests.security.helpers import FrozenClock


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ca.pem, server.pem/-key.pem and client certificates (client.pem, corral-router.pem …)."""
    out = tmp_path_factory.mktemp("certs")
    make_all(out, days=1)
    return out


@pytest.fixture
def clock() -> FrozenClock:
    """A rate limiter's clock that moves only when a test moves it."""
    return FrozenClock()
