"""Tests of the prewarm service."""
