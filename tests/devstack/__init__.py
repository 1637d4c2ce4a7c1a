"""Tests for the local Redis/PostgreSQL launcher."""
