"""Prefect flows: the creator's and the contributor's procedures, one screen each."""
