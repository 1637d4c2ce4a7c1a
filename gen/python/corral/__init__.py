"""Generated protobuf packages for Corral (do not edit; run make proto)."""
