"""Benchmarks that print figures (see bench/README.md): ``python -m bench.run``."""
