"""Benchmarks of the sidecar: serving speed, rotation latency and footprint.

Run with ``make bench``. Not part of the test suite: the numbers depend on the
machine, so the harness records them in docs/benchmarks.md instead of asserting.
"""
