"""Simulated contributors for demos, tests and benchmarks: never imported by the roles."""
