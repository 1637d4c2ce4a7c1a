"""services prewarm package."""
