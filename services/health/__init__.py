"""services health package."""
