"""Benchmarks: scripts run as modules from the project root (`.venv/bin/python -m benchmarks.<name>`),
each printing its figures; benchmarks/README.md lists them, benchmarks/RESULTS.md holds the results."""
