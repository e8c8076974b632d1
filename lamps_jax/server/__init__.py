"""`lamps-jax serve`: an OpenAI-compatible HTTP server on the live engine, its tool-call parsers and metrics."""
