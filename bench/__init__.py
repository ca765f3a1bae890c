"""Benchmarks of the toolkit, run from the repository root as modules (`python -m bench.run --preset cpu`), so that
they import the toolkit's modules as every script does and measure them through the functions a user calls."""
