"""services cache package."""
