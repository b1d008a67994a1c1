"""Benchmark scripts for spiderfarm (not tests, not part of the package). See README.md."""
