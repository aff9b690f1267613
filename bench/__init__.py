"""Benchmarks (not deployed). Each script prints one JSON object; `python -m bench.run_all` runs them all."""
