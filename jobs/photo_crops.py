"""A small photo-like dataset from the photos that ship inside installed packages (scikit-learn's china.jpg and
flower.jpg, matplotlib's grace_hopper.jpg and Minduka_Present_Blue_Pack.png): 500 random square crops of each,
resized to 32x32 (or SIZE), labeled by the photo they come from; another SEED draws other crops (a held-out set).
For the stabilizer ablation on something that is not digits:

    python jobs/photo_crops.py /tmp/crops.npz [SIZE] [SEED]
    gan-dist prepare /tmp/crops.npz /tmp/crops32 --resolution 32 --channels 3
    python jobs/ablation.py --out /tmp/ablation-photo --data /tmp/crops32 --rows "+EMA,+R1,+DiffAugment,+ADA,+LeCam"
"""

from __future__ import annotations

import os
import sys

import matplotlib
import numpy as np
import sklearn.datasets
from PIL import Image

CROPS_PER_PHOTO = 500
SIZE = 32


def photo_paths() -> list[str]:
    sample_data = os.path.join(matplotlib.get_data_path(), "sample_data")
    return list(sklearn.datasets.load_sample_images().filenames) + [
        os.path.join(sample_data, name) for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")]


def crops(seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×size×size×3 crops (sides from a quarter of the short edge, at most 64 px, up to half of it) and labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, path in enumerate(photo_paths()):
        photo = Image.open(path).convert("RGB")
        width, height = photo.size
        low = min(64, min(width, height) // 4)
        for _ in range(CROPS_PER_PHOTO):
            side = int(rng.integers(low, max(low + 1, min(width, height) // 2)))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
            images.append(np.asarray(crop))
            labels.append(label)
    return np.stack(images), np.array(labels)


if __name__ == "__main__":
    images, labels = crops(seed=int(sys.argv[3]) if len(sys.argv) > 3 else 0,
                           size=int(sys.argv[2]) if len(sys.argv) > 2 else SIZE)
    np.savez(sys.argv[1], images=images, labels=labels)
    print(f"{len(images)} crops of {len(photo_paths())} photos -> {sys.argv[1]}")
