"""Baseline servers for bench/serving.py: what the product service is compared against.

Benchmark code, not product: they exist to turn the service's numbers into ratios.
"""
