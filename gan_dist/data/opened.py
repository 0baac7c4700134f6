"""A prepared dataset opened once by a command: its manifest read once, its rows loaded once and handed to everyone
who needs its images (a domain classifier trained on it, its real features, SWD, the near-copy search)."""

from __future__ import annotations

import numpy as np

from gan_dist.data.reader import load_columns, read_manifest


class OpenedDataset:
    def __init__(self, uri: str):
        self.uri, self.manifest = uri, read_manifest(uri)
        self.prefetch = 0
        self.loaded: dict[str, np.ndarray] | None = None

    def plan(self, rows: int) -> None:
        """The first load reads at least the first `rows` rows: the command sizes it to the most any of its
        consumers asks for, so that one load serves them all."""
        self.prefetch = max(self.prefetch, min(rows, self.manifest.count))

    def columns(self, rows: int | None = None) -> dict[str, np.ndarray]:
        """The first `rows` rows (all when None, or when the dataset has fewer), from the one load: read again
        only for more rows than the first load read."""
        rows = self.manifest.count if rows is None else min(rows, self.manifest.count)
        if self.loaded is None or len(self.loaded["image"]) < rows:
            self.loaded = load_columns(self.uri, self.manifest, range(max(rows, self.prefetch)))
        return {name: column[:rows] for name, column in self.loaded.items()}

    def images(self, rows: int | None = None) -> np.ndarray:
        return self.columns(rows)["image"]
