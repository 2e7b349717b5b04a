"""Benchmarks: each prints its figures beside the limit it is measured against."""
