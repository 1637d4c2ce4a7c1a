"""Fixtures for launcher tests: a private state folder per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.config import make_temp_state_dir


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state folder, removed after the test."""
    state = make_temp_state_dir("corral-devstack-test-")
    yield state
    shutil.rmtree(state, ignore_errors=True)
