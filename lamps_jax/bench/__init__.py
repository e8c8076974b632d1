"""Benchmarks of the serving engine."""
