"""The comparative benchmark harness: fleet and gateway processes, open-loop load, result files."""
