"""Developer scripts: code generation, the local stack and the demo."""
