"""Servers and throwaway projects shared by the tests and the benchmarks: a DVC project copy, a local
OpenAI-compatible endpoint for faults a real server cannot be made to produce, and an S3-compatible server."""
