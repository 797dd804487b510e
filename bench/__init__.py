"""The benchmarks, run as modules from the repository root (`python -m bench.engine_throughput`);
what they share is in `bench.harness`, what they measured in docs/benchmarks.md."""
