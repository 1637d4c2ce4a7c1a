"""The `corral` command line: see and steer the fleet."""
