"""Benchmarks, one module per concern: ``python -m bench.<name>`` prints timings and ratios
against a baseline measured in the same run."""
