"""Benchmarks and the network-trace harness."""
