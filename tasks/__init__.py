"""Prefect tasks: thin wrappers over decentralml's core, with retries for the I/O failures no layer
below retries (tasks/policy.py)."""
