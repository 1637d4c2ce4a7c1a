"""Foundation tests: config, bootstrap, service processes."""
