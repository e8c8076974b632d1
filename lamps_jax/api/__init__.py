"""API calls of augmented requests: interception triggers and the clock-driven executor."""
