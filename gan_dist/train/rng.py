"""Every rank's RNG state, gathered into rank 0's checkpoint and handed back to each rank on resume.

The training noise itself is a pure function of (seed, rank, step) and needs none of this; the global
generators still matter to anything else that draws from them (dropout, augmentation, user code)."""

from __future__ import annotations

from typing import Any

import torch

from gan_dist.train import collective


def capture() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def gather_all() -> list[dict[str, Any]]:
    """Rank order list of every rank's state; a collective when distributed (every rank calls it)."""
    return collective.gather({k: v.cpu() for k, v in capture().items()})


def restore(states: list[dict[str, Any]], rank: int) -> None:
    """Restore this rank's state; a resume on a different world size leaves extra ranks as they are."""
    if rank >= len(states):
        return
    torch.set_rng_state(states[rank]["cpu"])
    if "cuda" in states[rank] and torch.cuda.is_available():
        torch.cuda.set_rng_state(states[rank]["cuda"])
