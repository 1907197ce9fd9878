"""Turning configuration into live parts: config, backends, checks, keys, waiting."""
