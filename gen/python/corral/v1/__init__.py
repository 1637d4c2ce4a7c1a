"""Generated Corral v1 contracts (do not edit; run make proto)."""
