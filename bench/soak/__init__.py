"""The soak: distributed mode under steady load for many minutes, with faults arriving while
others are still being recovered from (`python -m bench.soak`, docs/benchmarks.md)."""
