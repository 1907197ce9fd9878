"""Prefect tasks: thin wrappers over decentralml's core, with retries where there is I/O."""
