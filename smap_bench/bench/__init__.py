"""Benchmarks: inference paths, live-pipeline load and replay-as-test."""
