"""Benchmark statistics, result files, prices and reports: the parts that need no model."""
