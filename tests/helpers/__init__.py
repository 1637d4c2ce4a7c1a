"""Test helpers shared across the suites."""
