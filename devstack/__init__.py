"""Local Redis and PostgreSQL + pgvector for development and tests, without root or Docker."""
