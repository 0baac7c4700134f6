"""The per-worker training loop and what it composes. Imports no Ray."""
