"""The benchmark: workloads, the timed loop, engines and endpoints, the sweep and SLO search, result files,
prices and reports (README: Benchmarking)."""
