"""Where `gan-dist prepare` reads images from. Each source is an indexable list of items: `load(i)` returns a
PIL image (or raises Skip) and runs in the encoding worker processes; `label(i)` and `describe(i)` are cheap."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from gan_dist.data.images import IMAGE_SUFFIXES, Skip, array_to_image, decode_file
from gan_dist.errors import UserError


class Source(Protocol):
    class_names: list[str]

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def label(self, index: int) -> int | None: ...

    def describe(self, index: int) -> str: ...


class ImageFolder:
    """A folder, read recursively. Top-level subfolders are classes (labels in sorted order); a folder without
    subfolders is unlabeled. Files that are not images by name are listed too, so they count as skips."""

    def __init__(self, root: str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"source folder {root} does not exist or is not a folder")
        subdirs = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.class_names = subdirs
        self.paths: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            self.paths += [Path(dirpath, name) for name in sorted(filenames)]
        self._labels = {name: index for index, name in enumerate(subdirs)}
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in self.paths):
            raise UserError(f"no image files under {root} ({len(self.paths)} other files); "
                            f"expected {', '.join(sorted(IMAGE_SUFFIXES))}")

    def __len__(self) -> int:
        return len(self.paths)

    def _class_of(self, path: Path) -> str | None:
        parts = path.relative_to(self.root).parts
        return parts[0] if len(parts) > 1 else None

    def label(self, index: int) -> int | None:
        name = self._class_of(self.paths[index])
        return self._labels.get(name) if name is not None else None

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> Image.Image:
        path = self.paths[index]
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise Skip("not an image file")
        if self.class_names and self._class_of(path) is None:
            raise Skip("outside the class folders")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Skip(f"unreadable ({exc.strerror or type(exc).__name__})") from None
        return decode_file(data)


class ArraySource:
    """In-memory arrays N×H×W or N×H×W×C (uint8, or float in [0, 1]) with optional labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, class_names: list[str], name: str):
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
            raise UserError(f"{name}: images must be N×H×W or N×H×W×C with C in 1, 3, 4; got shape {images.shape}")
        if labels is not None and len(labels) != len(images):
            raise UserError(f"{name}: {len(labels)} labels for {len(images)} images")
        self.images, self.labels, self.class_names, self.name = images, labels, class_names, name

    def __len__(self) -> int:
        return len(self.images)

    def label(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def load(self, index: int) -> Image.Image:
        return array_to_image(self.images[index])


def npz_source(path: str) -> ArraySource:
    """An .npz with images under `images`, `x` or the first array, and labels under `labels` or `y`."""
    try:
        arrays = np.load(path, allow_pickle=False)  # never unpickle objects from a data file
    except FileNotFoundError:
        raise UserError(f"no such file {path}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc})") from None
    keys = list(arrays.keys())
    image_key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if keys else None)
    if image_key is None:
        raise UserError(f"{path} holds no arrays")
    label_key = next((k for k in ("labels", "y", "Y") if k in keys), None)
    labels = arrays[label_key].astype(np.int64) if label_key else None
    names = [str(c) for c in np.unique(labels)] if labels is not None else []
    return ArraySource(arrays[image_key], labels, names, os.path.basename(path))


def digits_source() -> ArraySource:
    """scikit-learn's 1,797 handwritten 8×8 digits, shipped inside the package (no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 ink -> 0..255
    return ArraySource(raw, digits.target.astype(np.int64), [str(d) for d in range(10)], "digits")


class TorchvisionSource:
    """A torchvision dataset already on disk under `root` (fetched only with download=True), train split."""

    def __init__(self, name: str, root: str, download: bool):
        import torchvision.datasets as tvd

        by_lower = {n.lower(): n for n in tvd.__all__}
        if name.lower() not in by_lower:
            raise UserError(f"unknown source '{name}': not a folder, .npz, 'digits' or a torchvision dataset name")
        cls = getattr(tvd, by_lower[name.lower()])
        params = inspect.signature(cls).parameters
        kwargs: dict = {"root": root}
        if "download" in params:
            kwargs["download"] = download
        if "train" in params:
            kwargs["train"] = True
        elif "split" in params:
            kwargs["split"] = "train"
        try:
            self.dataset = cls(**kwargs)
        except ImportError as exc:
            raise UserError(f"torchvision dataset {cls.__name__} needs a package that is missing: {exc}") from None
        except (RuntimeError, OSError) as exc:
            hint = "" if download else "; pass --download to fetch it"
            raise UserError(f"torchvision dataset {cls.__name__} not found under {root} ({str(exc).splitlines()[0]}){hint}") from None
        self.name = cls.__name__
        self.class_names = [str(c) for c in getattr(self.dataset, "classes", [])]

    def __len__(self) -> int:
        return len(self.dataset)

    def label(self, index: int) -> int | None:
        targets = getattr(self.dataset, "targets", None)  # avoids decoding the image just for its label
        target = targets[index] if targets is not None else self.dataset[index][1]
        try:
            return int(target)
        except (TypeError, ValueError):  # multi-attribute targets (CelebA) are not class labels
            return None

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def load(self, index: int) -> Image.Image:
        image = self.dataset[index][0]
        if not isinstance(image, Image.Image):  # some datasets return tensors or arrays
            array = np.asarray(image)
            image = array_to_image(array.transpose(1, 2, 0) if array.ndim == 3 and array.shape[0] in (1, 3) else array)
        return image


def open_source(spec: str, root: str | None = None, download: bool = False) -> Source:
    """SOURCE as given on the command line: 'digits', an .npz file, an image folder, or a torchvision name."""
    if spec == "digits":
        return digits_source()
    if spec.endswith(".npz"):
        return npz_source(spec)
    if os.path.isdir(spec) or os.sep in spec or spec.startswith("."):
        return ImageFolder(spec)
    if root is None:
        raise UserError(f"'{spec}' is not a folder here; for a torchvision dataset pass --root DIR (and --download to fetch it)")
    return TorchvisionSource(spec, root, download)
