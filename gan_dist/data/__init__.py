"""Shards: the contract, `prepare` writers and sources, and the readers."""
