"""Benchmark scenarios, one module each, run by bench/run.py."""
