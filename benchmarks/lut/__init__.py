"""segfactory.benchmarks.lut: latency lookup tables (units, measuring, profiling, prediction, device tables)."""
