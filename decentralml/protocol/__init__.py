"""What the parties of a marketplace agree on: records, rules, commitments and where files go.

Nothing here trains, orchestrates or talks to a backend: the creator, the contributors, both
marketplace backends and the chain indexer all read the protocol from this one place.
"""
