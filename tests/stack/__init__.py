"""Tests for the whole local stack (`python -m scripts.stack`, `make up`)."""
