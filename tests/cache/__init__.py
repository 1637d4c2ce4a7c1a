"""Tests of the cache service."""
