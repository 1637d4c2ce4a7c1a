"""Tests of the Ollama node simulator."""
