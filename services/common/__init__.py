"""services common package."""
