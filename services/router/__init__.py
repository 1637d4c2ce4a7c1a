"""services router package."""
