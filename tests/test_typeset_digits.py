"""The typeset-digits source (digits 0-9 rendered in matplotlib's fonts), its cache, and `prepare --skip` splits."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from gan_dist.data import sources
from gan_dist.data.images import ImageSpec
from gan_dist.data.embedded import embedded_typeset_digits
from gan_dist.data.prepare import PrepareOptions, prepare
from gan_dist.data.reader import load_columns, read_manifest
from gan_dist.data.sources import TypesetDigits, digits_source
from gan_dist.errors import UserError
from helpers import run


def _pixels(source, indices) -> np.ndarray:
    return np.stack([np.asarray(source.load(i)) for i in indices])


def _rows(out) -> list[tuple[bytes, int]]:
    columns = load_columns(str(out), read_manifest(str(out)))
    return [(image.tobytes(), int(label)) for image, label in zip(columns["image"], columns["label"])]


def test_ten_balanced_classes_named_like_the_digits():
    source = TypesetDigits(200, seed=0)
    assert len(source) == 200
    assert source.class_names == digits_source().class_names == [str(d) for d in range(10)]
    assert Counter(source.label(i) for i in range(200)) == {d: 20 for d in range(10)}
    assert [source.label(i) for i in range(10)] != list(range(10))  # a seeded order, not 0, 1, 2, ...
    image = source.load(0)
    assert image.mode == "L" and image.size == (64, 64)


def test_each_image_depends_on_the_seed_and_its_index_alone():
    first, again, other = TypesetDigits(50, seed=1), TypesetDigits(50, seed=1), TypesetDigits(50, seed=2)
    pixels = _pixels(first, range(50))
    np.testing.assert_array_equal(_pixels(again, reversed(range(50)))[::-1], pixels)  # the load order is no input
    assert [first.label(i) for i in range(50)] == [again.label(i) for i in range(50)]
    assert not np.array_equal(_pixels(other, range(50)), pixels)


def _border_and_centre(images: np.ndarray) -> tuple[float, float]:
    side = images.shape[1]
    ring = np.ones((side, side), bool)
    ring[side // 8: side - side // 8, side // 8: side - side // 8] = False
    centre = images[:, side // 4: side - side // 4, side // 4: side - side // 4]
    return float(images[:, ring].mean()), float(centre.mean())


def test_white_ink_on_black_like_the_handwritten_digits():
    digits = digits_source()
    for images in (_pixels(TypesetDigits(100), range(100)), _pixels(digits, range(100))):
        border, centre = _border_and_centre(images)
        assert border < 0.5 * centre and centre > 60, (border, centre)  # inverted, the border would be the bright part


def _tile(font: str, digit: int) -> np.ndarray:
    """The digit without jitter at 16x16, zero-mean and unit norm: a template to correlate."""
    glyph = sources._place(sources._glyph(font, digit, 0), 0.0, 1.0, np.zeros(2), 0.0)
    pixels = np.asarray(glyph.resize((16, 16), Image.Resampling.BOX), float).ravel()
    return (pixels - pixels.mean()) / np.linalg.norm(pixels - pixels.mean())


def test_every_font_renders_each_digit_as_a_lining_figure():
    fonts = TypesetDigits(10).fonts
    assert len(fonts) == len(sources.TYPESET_FONTS) >= 15
    tiles = {}
    for font in fonts:
        heights = [sources._glyph(font, d, 0).height for d in range(10)]
        assert min(heights) > 30, (font, heights)  # ink, at nearly the font's size (64 px)
        assert min(heights) >= 0.75 * max(heights), (font, heights)  # no old-style figures, no symbols
        tiles[font] = np.stack([_tile(font, d) for d in range(10)])
    # Each font's digits look most like the same digits in the other fonts (a symbol font's would not).
    for font in fonts:
        others = np.mean([tiles[f] for f in fonts if f != font], axis=0)
        read_as = (tiles[font] @ others.T).argmax(axis=1)
        assert (read_as == np.arange(10)).sum() >= 8, (font, read_as)


@pytest.mark.slow
def test_prepare_typeset_digits_on_the_command_line(tmp_path):
    out = tmp_path / "typeset-32"
    done = run("prepare", "typeset-digits", str(out), "--resolution", "32", "--limit", "200", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "wrote 200 images (32x32x1, raw)" in done.stdout
    manifest = read_manifest(str(out))
    assert (manifest.count, manifest.channels, manifest.resolution) == (200, 1, 32)
    assert manifest.class_names == [str(d) for d in range(10)]
    columns = load_columns(str(out), manifest)
    assert set(columns["label"].tolist()) == set(range(10))
    assert columns["image"].shape == (200, 32, 32, 1)


def _split(source: str, out, **options) -> list[tuple[bytes, int]]:
    prepare(source, str(out), PrepareOptions(ImageSpec(16, 1), shard_size=64, **options), progress=False)
    return _rows(out)


def test_skip_and_limit_split_the_same_order_into_disjoint_parts(tmp_path):
    whole = _split("typeset-digits", tmp_path / "whole", limit=300)
    train = _split("typeset-digits", tmp_path / "train", limit=200)
    held_out = _split("typeset-digits", tmp_path / "held-out", skip=200, limit=100)
    assert len(set(whole)) == 300 and not set(train) & set(held_out)
    assert train + held_out == whole


def test_skip_leaves_bad_inputs_before_the_split_to_the_other_part(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    for i in range(30):
        Image.new("L", (8, 8), 8 * i).save(root / f"{i:02d}.png")
        if i % 7 == 3:
            (root / f"{i:02d}-broken.png").write_bytes(b"not a png")
    whole = _report(root, tmp_path / "whole")
    first = _report(root, tmp_path / "first", limit=12)
    rest = _report(root, tmp_path / "rest", skip=12)
    assert _rows(tmp_path / "first") + _rows(tmp_path / "rest") == _rows(tmp_path / "whole")
    assert first.counts + rest.counts == whole.counts == {"not a decodable image": 4}
    assert first.counts and rest.counts  # the shuffled broken files fall on both sides of this split


def _report(root, out, **options):
    return prepare(str(root), str(out), PrepareOptions(ImageSpec(8, 1), shuffle_seed=5, **options), progress=False)[1]


@pytest.mark.slow
def test_skip_on_the_command_line_reports_what_it_left_out(tmp_path):
    done = run("prepare", "typeset-digits", str(tmp_path / "out"), "--skip", "1990", "--resolution", "16")
    assert done.returncode == 0, done.stderr
    assert "wrote 10 images" in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("prepare: ")]
    assert progress[-1].startswith("prepare: 2000/2000 (100%) ")
    assert progress[-1].endswith(", first 1990 left out by --skip")
    assert "skipped 0 of 10 inputs" in done.stderr


@pytest.mark.parametrize("skip, message", [
    (2000, "--skip 2000 leaves no images: the source has 2000 usable of 2000 inputs; lower --skip"),
    (-1, "--skip must be at least 0, got -1"),
])
def test_a_skip_past_the_end_or_below_zero_is_refused_in_one_line(tmp_path, skip, message):
    with pytest.raises(UserError) as refused:
        prepare("typeset-digits", str(tmp_path / "out"), PrepareOptions(ImageSpec(8, 1), skip=skip), progress=False)
    assert str(refused.value) == message
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_embedded_typeset_digits_are_prepared_once_and_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GAN_DIST_CACHE", str(tmp_path))
    path = embedded_typeset_digits()
    assert path == str(tmp_path / "typeset-digits-32")
    manifest = read_manifest(path)
    assert (manifest.count, manifest.channels, manifest.resolution) == (2000, 1, 32)
    files = {p.name: p.stat().st_ino for p in (tmp_path / "typeset-digits-32").iterdir()}
    assert embedded_typeset_digits() == path
    assert {p.name: p.stat().st_ino for p in (tmp_path / "typeset-digits-32").iterdir()} == files
    assert [p.name for p in tmp_path.iterdir()] == ["typeset-digits-32"] and capsys.readouterr().err == ""
