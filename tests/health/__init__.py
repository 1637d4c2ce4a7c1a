"""Tests of the health service."""
