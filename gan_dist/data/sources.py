"""Where `gan-dist prepare` reads images from. Each source is an indexable list of items: `load(i)` returns a
PIL image (or raises Skip) and runs in the encoding worker processes; `label(i)` and `describe(i)` are cheap."""

from __future__ import annotations

import importlib.util
import inspect
import os
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gan_dist import storage
from gan_dist.data.images import IMAGE_SUFFIXES, Skip, array_to_image, decode_file, pixels_to_uint8
from gan_dist.errors import UserError


# PIL modes without colour: a folder of only these prepares as one channel unless --channels says otherwise.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class Source(Protocol):
    class_names: list[str]

    def __len__(self) -> int: ...

    def grayscale(self) -> bool:
        """Whether every image is without colour: `prepare` then writes one channel unless asked for three."""
        ...

    def load(self, index: int) -> Image.Image: ...

    def label(self, index: int) -> int | None: ...

    def describe(self, index: int) -> str: ...


@runtime_checkable
class PairedSource(Source, Protocol):
    """A source whose items are pairs: `load` gives the target (the shards' "image"), `load_input` the image a paired
    translator takes (their "input"), given the target as prepared (uint8 H×W×C), at the same resolution."""

    def input_grayscale(self) -> bool: ...

    def load_input(self, index: int, target: np.ndarray) -> Image.Image: ...


def _is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


class ImageFolder:
    """A folder, read recursively. Top-level subfolders that hold images are classes (labels in sorted order); a
    folder without such subfolders is unlabeled. Files that are not images by name are listed too, so they count
    as skips. Linked folders are followed, each real folder once, so a link back up the tree is no endless loop
    (storage.local_files); hidden folders (.git, .ipynb_checkpoints) are not inputs."""

    def __init__(self, root: str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"source folder {root} does not exist or is not a folder")
        self.paths = [Path(file) for file in storage.local_files(root)]
        # Classes come from where the images are: an empty subfolder is no class with zero examples.
        self.class_names = sorted({c for c in map(self._class_of, filter(_is_image_name, self.paths)) if c})
        self._labels = {name: index for index, name in enumerate(self.class_names)}
        if not any(map(_is_image_name, self.paths)):
            raise UserError(f"no image files under {root} ({len(self.paths)} other files); "
                            f"expected {', '.join(sorted(IMAGE_SUFFIXES))}")

    def __len__(self) -> int:
        return len(self.paths)

    def grayscale(self) -> bool:
        """From each image file's header (no decoding); files that do not open are left to `load` to skip."""
        for path in filter(_is_image_name, self.paths):
            try:
                with Image.open(path) as image:
                    if image.mode not in GRAY_MODES:
                        return False
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
        return True

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
        if not _is_image_name(path):
            raise Skip("not an image file")
        if self.class_names and self._class_of(path) not in self._labels:
            raise Skip("outside the class folders")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Skip(f"unreadable ({exc.strerror or type(exc).__name__})") from None
        return decode_file(data)


PAIR_EXAMPLES = 3  # names a pairing error lists


class PairedFolders:
    """Two folders whose image files pair by relative name without the extension (`cat/1.png` with `cat/1.jpg`):
    `targets`, what a paired translator should make (their classes are the labels), and `inputs`, what it takes.
    Every pair is checked before any encoding: an unpaired name, or a pair of different sizes, is a wrong pairing
    rather than a bad input, so it stops `prepare` with the first few named."""

    def __init__(self, inputs: str, targets: str):
        self.targets, inputs_folder = ImageFolder(targets), ImageFolder(inputs)
        self.class_names = self.targets.class_names
        target_keys, input_keys = _pairing_keys(self.targets), _pairing_keys(inputs_folder)
        _check_paired(target_keys, input_keys, targets, inputs)
        self.input_paths = {index: inputs_folder.paths[input_keys[key]] for key, index in target_keys.items()}
        mismatched = []
        for index, input_path in self.input_paths.items():
            sizes = (_header(self.targets.paths[index]).size, _header(input_path).size)
            if None not in sizes and sizes[0] != sizes[1]:
                mismatched.append(f"{self.targets.paths[index].name} {sizes[0][0]}x{sizes[0][1]} vs "
                                  f"{sizes[1][0]}x{sizes[1][1]}")
        if mismatched:
            raise UserError(f"{len(mismatched)} input/target pairs differ in size (e.g. "
                            f"{'; '.join(mismatched[:PAIR_EXAMPLES])}); each input must have its target's size")

    def __len__(self) -> int:
        return len(self.targets)

    def grayscale(self) -> bool:
        return self.targets.grayscale()

    def input_grayscale(self) -> bool:
        modes = (_header(path).mode for path in self.input_paths.values())
        return all(mode in GRAY_MODES for mode in modes if mode is not None)

    def label(self, index: int) -> int | None:
        return self.targets.label(index)

    def describe(self, index: int) -> str:
        return self.targets.describe(index)

    def load(self, index: int) -> Image.Image:
        return self.targets.load(index)

    def load_input(self, index: int, target: np.ndarray) -> Image.Image:
        try:
            data = self.input_paths[index].read_bytes()
        except OSError as exc:
            raise Skip(f"input unreadable ({exc.strerror or type(exc).__name__})") from None
        return decode_file(data)


def _pairing_keys(folder: ImageFolder) -> dict[str, int]:
    """Relative name without extension -> index of the image file, for every image file of `folder`."""
    keys: dict[str, int] = {}
    for index, path in enumerate(folder.paths):
        if _is_image_name(path):
            key = path.relative_to(folder.root).with_suffix("").as_posix()
            if key in keys:
                raise UserError(f"{folder.paths[keys[key]]} and {path} would both pair with '{key}'; give the images "
                                f"of a folder distinct names without their extensions")
            keys[key] = index
    return keys


def _check_paired(target_keys: dict[str, int], input_keys: dict[str, int], targets: str, inputs: str) -> None:
    only = [(sorted(set(a) - set(b)), where) for a, b, where in ((target_keys, input_keys, f"SOURCE {targets}"),
                                                                  (input_keys, target_keys, f"--inputs {inputs}"))]
    unpaired = [f"{len(names)} only in {where} (e.g. {', '.join(names[:PAIR_EXAMPLES])})" for names, where in only
                if names]
    if unpaired:
        raise UserError(f"the folders' image names do not match: {'; '.join(unpaired)}; each target needs an input "
                        f"of the same relative name")


class Header(NamedTuple):
    size: tuple[int, int] | None
    mode: str | None


def _header(path: Path) -> Header:
    """An image file's size and mode from its header, without decoding; unknown (None) where it does not open:
    `load` skips such a file."""
    try:
        with Image.open(path) as image:
            return Header(image.size, image.mode)
    except (OSError, ValueError, Image.DecompressionBombError):
        return Header(None, None)


class ArraySource:
    """In-memory arrays N×H×W or N×H×W×C with optional integer labels. The pixels become uint8 here, once for the
    whole array (see pixels_to_uint8), so the workers only slice."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, class_names: list[str], name: str):
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
            raise UserError(f"{name}: images must be N×H×W or N×H×W×C with C in 1, 3, 4; got shape {images.shape}")
        if labels is not None and len(labels) != len(images):
            raise UserError(f"{name}: {len(labels)} labels for {len(images)} images")
        self.images, self.labels, self.class_names, self.name = pixels_to_uint8(images, name), labels, class_names, name

    def __len__(self) -> int:
        return len(self.images)

    def grayscale(self) -> bool:
        return self.images.ndim == 3 or self.images.shape[3] == 1

    def label(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def load(self, index: int) -> Image.Image:
        return array_to_image(self.images[index])


class PairedArrays(ArraySource):
    """In-memory pairs: `inputs` beside `images` (targets), one input per image, each as ArraySource takes them."""

    def __init__(self, images: np.ndarray, inputs: np.ndarray, labels: np.ndarray | None, class_names: list[str],
                 name: str):
        super().__init__(images, labels, class_names, name)
        self.inputs = ArraySource(inputs, None, [], f"{name} inputs")
        if len(self.inputs) != len(self):
            raise UserError(f"{name}: {len(self.inputs)} inputs for {len(self)} images")

    def input_grayscale(self) -> bool:
        return self.inputs.grayscale()

    def load_input(self, index: int, target: np.ndarray) -> Image.Image:
        return self.inputs.load(index)


def labels_to_classes(raw: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """Labels as saved -> class indices 0..K-1 and the K class names: the distinct values in sorted order, so
    strings, whole floats and gaps (0, 5, 9) all give indices that match the names."""
    if raw.ndim == 2 and raw.shape[1] == 1:  # N×1, as Keras saves them
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise UserError(f"{name}: labels must hold one class per image, got shape {raw.shape} "
                        f"(for one-hot labels save labels.argmax(1))")
    if raw.dtype.kind == "f":
        fractional = ~np.isfinite(raw) | (raw != np.round(raw))
        if fractional.any():
            raise UserError(f"{name}: labels must be whole class ids, got {raw[fractional][0]:g}; save integer "
                            f"or string labels")
        raw = raw.astype(np.int64)
    elif raw.dtype.kind not in "biuSU":
        raise UserError(f"{name}: labels of dtype {raw.dtype} are not class ids; save integer or string labels")
    values, indices = np.unique(raw, return_inverse=True)
    names = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]
    return indices.astype(np.int64), names


_NOT_READABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _npz_array(arrays: np.lib.npyio.NpzFile, key: str, path: str) -> np.ndarray:
    """One array of an .npz; numpy reads (and may fail) only here, on access."""
    try:
        value = arrays[key]
    except _NOT_READABLE as exc:
        if "Object arrays" in str(exc):  # refused by allow_pickle=False; objects are no pixels or labels anyway
            raise UserError(f"{path}: array '{key}' holds Python objects, not numbers; save it as a numeric "
                            f"array (e.g. numpy.stack the images) with numpy.savez") from None
        raise UserError(f"{path}: array '{key}' cannot be read ({type(exc).__name__}); the file is damaged, "
                        f"save it again with numpy.savez") from None
    if not isinstance(value, np.ndarray):  # a zip member that is no .npy
        raise UserError(f"{path}: '{key}' is not a numpy array; save the file with numpy.savez")
    return value


def npz_source(path: str) -> ArraySource:
    """An .npz with images under `images`, `x` or the first array, and labels under `labels` or `y`."""
    not_npz = f"{path} is not an .npz archive (or is damaged); save the arrays with numpy.savez(path, images=...)"
    try:
        arrays = np.load(path, allow_pickle=False)  # never unpickle objects from a data file
    except FileNotFoundError:
        raise UserError(f"no such file {path}") from None
    except _NOT_READABLE:  # numpy's own message here suggests unpickling: never advise that for a data file
        raise UserError(not_npz) from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):  # a single .npy array under an .npz name
        raise UserError(not_npz)
    keys = list(arrays.keys())
    image_key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if keys else None)
    if image_key is None:
        raise UserError(f"{path} holds no arrays; save the images with numpy.savez(path, images=...)")
    label_key = next((k for k in ("labels", "y", "Y") if k in keys), None)
    name = os.path.basename(path)
    labels, names = labels_to_classes(_npz_array(arrays, label_key, path), name) if label_key else (None, [])
    return ArraySource(_npz_array(arrays, image_key, path), labels, names, name)


def digits_source() -> ArraySource:
    """scikit-learn's 1,797 handwritten 8×8 digits, shipped inside the package (no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 ink -> 0..255
    return ArraySource(raw, digits.target.astype(np.int64), [str(d) for d in range(10)], "digits")


class DigitEdges:
    """The embedded paired demo: scikit-learn's digits as targets, each one's outline as its input (the morphological
    gradient, 3×3 dilation minus erosion, of the digit as prepared, so the outline is as sharp at any resolution)."""

    def __init__(self):
        self.digits = digits_source()
        self.class_names = self.digits.class_names

    def __len__(self) -> int:
        return len(self.digits)

    def grayscale(self) -> bool:
        return True

    def input_grayscale(self) -> bool:
        return True

    def label(self, index: int) -> int | None:
        return self.digits.label(index)

    def describe(self, index: int) -> str:
        return f"digit-edges[{index}]"

    def load(self, index: int) -> Image.Image:
        return self.digits.load(index)

    def load_input(self, index: int, target: np.ndarray) -> Image.Image:
        return array_to_image(outline(target))


def outline(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×C -> its morphological gradient (the 3×3 neighbourhood's max minus its min), uint8 H×W×C."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    windows = np.stack([padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)])
    return windows.max(axis=0) - windows.min(axis=0)


# matplotlib's bundled TrueType fonts whose 0-9 are plain lining figures. Left out: cmex10 and cmsy10 (symbols at
# the digits' codes), cmmi10 (old-style figures of uneven height), the STIXNonUni*, STIXSiz* and *Display fonts (no
# digit glyphs), LastResortHE (placeholder boxes).
TYPESET_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf",
)
_RENDER_SIDE = 64  # the images' side; prepare resizes them to --resolution
# Framed like sklearn's handwritten digits, so the two digit domains differ in style, not in layout: the jittered
# glyph's height is `scale` (0.84-0.96) of the frame's, as their ink fills the frame's height, its width at most
# _INK_WIDTH of it; with the largest shift a glyph still ends inside the frame.
_INK_WIDTH = 0.9


def _font_dir() -> Path:
    """matplotlib's font folder, found without importing matplotlib (which would read its config and font cache)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("typeset-digits needs the fonts inside matplotlib, which is not installed; "
                        "pip install matplotlib")
    return Path(spec.submodule_search_locations[0], "mpl-data", "fonts", "ttf")


@lru_cache(maxsize=None)  # per process: the encode workers each load a font once
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _RENDER_SIDE)


def _glyph(path: str, digit: int, stroke: int) -> Image.Image:
    """The digit in white on black, cropped to its ink."""
    font = _font(path)
    canvas = Image.new("L", (2 * _RENDER_SIDE, 2 * _RENDER_SIDE), 0)
    ImageDraw.Draw(canvas).text((_RENDER_SIDE, _RENDER_SIDE), str(digit), fill=255, font=font, anchor="mm",
                                stroke_width=stroke, stroke_fill=255)
    return canvas.crop(canvas.getbbox())


def _place(glyph: Image.Image, angle: float, scale: float, shift: np.ndarray, shear: float) -> Image.Image:
    """The glyph sheared, rotated, scaled to its share of the frame and moved, in one resampling."""
    theta = np.deg2rad(angle)
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shape = rotate @ np.array([[1.0, shear], [0.0, 1.0]])
    corners = shape @ np.array([[0, glyph.width, 0, glyph.width], [0, 0, glyph.height, glyph.height]])
    width, height = np.ptp(corners, axis=1)  # sized after the jitter
    forward = shape * _RENDER_SIDE * min(scale / height, _INK_WIDTH / width)
    centre = _RENDER_SIDE * (0.5 + shift)
    inverse = np.linalg.inv(forward)  # PIL maps each output pixel back to the glyph
    offset = np.array(glyph.size) / 2 - inverse @ centre
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    return glyph.transform((_RENDER_SIDE, _RENDER_SIDE), Image.Transform.AFFINE, coefficients,
                           Image.Resampling.BICUBIC, fillcolor=0)


class TypesetDigits:
    """`count` digits 0-9 typeset in TYPESET_FONTS, white on black like `digits_source()`, an equal share of each
    class in a seeded order, each with its own font, stroke width and affine jitter. Every random draw is made
    here from one seeded generator; `load` only renders, so the encode workers render in parallel and the
    images depend on (seed, index) alone."""

    def __init__(self, count: int = 2000, seed: int = 0):
        if count < 1:
            raise UserError(f"typeset-digits: count must be at least 1, got {count}")
        folder = _font_dir()
        missing = [name for name in TYPESET_FONTS if not (folder / name).is_file()]
        if missing:
            raise UserError(f"typeset-digits: font {missing[0]} is missing from {folder}; reinstall matplotlib "
                            f"(pip install --force-reinstall matplotlib)")
        self.fonts = [str(folder / name) for name in TYPESET_FONTS]
        self.class_names = [str(d) for d in range(10)]
        rng = np.random.default_rng(seed)
        self.labels = rng.permutation(np.arange(count) % 10)
        self.font_index = rng.integers(len(self.fonts), size=count)
        self.stroke = rng.integers(1, 5, size=count)  # PIL stroke_width in pixels at _RENDER_SIDE
        self.angle = rng.uniform(-10.0, 10.0, count)  # degrees
        self.scale = rng.uniform(0.84, 0.96, count)  # the glyph's height over the frame's
        self.shift = rng.uniform(-0.02, 0.02, (count, 2))  # of the side
        self.shear = rng.uniform(-0.15, 0.15, count)

    def __len__(self) -> int:
        return len(self.labels)

    def grayscale(self) -> bool:
        return True  # white glyphs on black

    def label(self, index: int) -> int | None:
        return int(self.labels[index])

    def describe(self, index: int) -> str:
        return f"typeset-digits[{index}] ({os.path.basename(self.fonts[self.font_index[index]])})"

    def load(self, index: int) -> Image.Image:
        glyph = _glyph(self.fonts[self.font_index[index]], self.label(index), int(self.stroke[index]))
        return _place(glyph, self.angle[index], self.scale[index], self.shift[index], self.shear[index])


# The built-in sources, by their SOURCE name; all grayscale.
EMBEDDED_SOURCES: dict[str, Callable[[], Source]] = {"digits": digits_source, "typeset-digits": TypesetDigits,
                                                     "digit-edges": DigitEdges}


class TorchvisionSource:
    """A torchvision dataset already on disk under `root` (fetched only with download=True), train split."""

    def __init__(self, name: str, root: str, download: bool):
        import torchvision.datasets as tvd

        by_lower = {n.lower(): n for n in tvd.__all__}
        if name.lower() not in by_lower:
            raise UserError(f"unknown source '{name}': not a folder, .npz, 'digits', 'typeset-digits' or a "
                              f"torchvision dataset name")
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

    def grayscale(self) -> bool:
        """From the first image: a torchvision dataset's images share one mode (MNIST's are L, CIFAR's RGB)."""
        return len(self.dataset) > 0 and self.load(0).mode in GRAY_MODES

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
            array = array.transpose(1, 2, 0) if array.ndim == 3 and array.shape[0] in (1, 3) else array
            image = array_to_image(pixels_to_uint8(array, self.describe(index)))
        return image


def open_source(spec: str, root: str | None = None, download: bool = False, inputs: str | None = None) -> Source:
    """SOURCE as given on the command line: 'digits', 'typeset-digits', 'digit-edges', an .npz file, an image folder,
    or a torchvision name; with `inputs` (a folder), SOURCE is a folder of targets paired with it by name."""
    if inputs is not None:
        if not os.path.isdir(spec):
            raise UserError(f"with --inputs, SOURCE must be the folder of target images, and {spec} is not a folder")
        return PairedFolders(inputs, spec)
    if spec in EMBEDDED_SOURCES:
        return EMBEDDED_SOURCES[spec]()
    if spec.lower().endswith(".npz"):
        return npz_source(spec)
    if os.path.exists(spec) and not os.path.isdir(spec):
        raise UserError(f"SOURCE {spec} is a file; pass an image folder, an .npz file (numpy.savez), 'digits', "
                        f"'typeset-digits' or a torchvision dataset name")
    if os.path.isdir(spec) or os.sep in spec or spec.startswith("."):
        return ImageFolder(spec)
    if root is None:
        raise UserError(f"'{spec}' is not a folder here; for a torchvision dataset pass --root DIR (and --download to fetch it)")
    return TorchvisionSource(spec, root, download)
