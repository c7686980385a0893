"""Benchmarks: every stage measured against its raw library limit in the same run."""
