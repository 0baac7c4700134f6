"""`gan-dist prepare` on real files: mixed formats, broken inputs, local folders and a loopback S3 endpoint."""

import io
import json
import os
import struct
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gan_dist.data.images import ImageSpec, Skip, decode_file, to_square_array
from gan_dist.data.prepare import PrepareOptions, prepare, write_dataset
from gan_dist.data.reader import load_columns, read_manifest
from gan_dist.data.sources import ArraySource
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from helpers import interrupted_prepare, run, s3_client, tiny_config
from media import make_mixed_folder

SPEC32 = ImageSpec(32, 3, min_size=8)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "photos"
    expected_skips = make_mixed_folder(root, good=2000)
    return root, expected_skips


@pytest.fixture(scope="module")
def mixed_local(mixed_folder, tmp_path_factory):
    root, _ = mixed_folder
    out = tmp_path_factory.mktemp("prepared") / "photos-32"
    manifest, report = prepare(str(root), str(out), PrepareOptions(SPEC32, shard_size=500, workers=2), progress=False)
    return out, manifest, report


def test_mixed_folder_keeps_every_good_image_and_counts_each_bad_one(mixed_folder, mixed_local):
    _, expected_skips = mixed_folder
    out, manifest, report = mixed_local
    assert manifest.count == 2000
    assert report.counts == expected_skips
    assert manifest.skipped == dict(expected_skips)
    assert manifest.class_names == ["class_0", "class_1", "class_2"]
    # Checked with plain pyarrow, not the project's reader.
    on_disk = json.loads((out / "_manifest.json").read_text())
    tables = [pq.read_table(out / name) for name in on_disk["shards"]]
    assert [t.num_rows for t in tables] == [500, 500, 500, 500]
    labels = Counter(label for t in tables for label in t.column("label").to_pylist())
    assert labels == {0: 667, 1: 667, 2: 666}
    assert {len(v) for t in tables for v in t.column("image").to_pylist()} == {32 * 32 * 3}


def test_skip_summary_names_reasons_and_first_paths(mixed_local):
    _, _, report = mixed_local
    summary = report.summary(2010)
    assert summary.startswith("skipped 10 of 2010 inputs: ")
    assert "decompression bomb" in summary and "dangling-link.png" in summary


def test_same_folder_on_s3_gives_the_same_dataset(mixed_folder, mixed_local, bucket, tmp_path):
    root, _ = mixed_folder
    _, local_manifest, _ = mixed_local
    uri = f"s3://{bucket}/photos-32"
    manifest, _ = prepare(str(root), uri, PrepareOptions(SPEC32, shard_size=500, workers=2), progress=False)
    assert manifest.content_hash == local_manifest.content_hash  # byte-identical shards, in the same order

    client = s3_client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="photos-32/")["Contents"])
    assert keys == ["photos-32/_manifest.json"] + [f"photos-32/shard-{i:05d}.parquet" for i in range(4)]
    remote = json.loads(client.get_object(Bucket=bucket, Key="photos-32/_manifest.json")["Body"].read())
    assert remote["count"] == 2000
    shard = client.get_object(Bucket=bucket, Key="photos-32/shard-00003.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(shard)).num_rows == 500

    images = load_columns(uri, read_manifest(uri))["image"]
    assert images.shape == (2000, 32, 32, 3)

    # and trains straight from the bucket
    cfg = tiny_config(uri, str(tmp_path / "runs"), **{"train.steps": 2, "train.checkpoint_every": 2})
    assert train(cfg).step == 2


def test_modes_become_the_requested_channels():
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert to_square_array(transparent, SPEC32).min() == 255  # transparent shows as white
    deep = Image.fromarray(np.full((40, 40), 0xABCD, np.uint16))
    assert to_square_array(deep, ImageSpec(32, 1))[0, 0, 0] == round(0xABCD / 257)
    cmyk = Image.new("CMYK", (40, 40), (0, 0, 0, 0))
    assert to_square_array(cmyk, SPEC32).shape == (32, 32, 3)
    assert to_square_array(Image.new("RGB", (40, 40), (10, 200, 30)), ImageSpec(32, 1)).shape == (32, 32, 1)


def test_without_channels_a_folder_with_no_colour_prepares_as_one_channel_and_any_colour_makes_three(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    for i, mode in enumerate(("L", "LA", "1", "I;16")):
        Image.new(mode, (16, 16)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")  # skipped later, no say in the channels
    auto = PrepareOptions(ImageSpec(16, None), shuffle_seed=None)
    manifest, _ = prepare(str(folder), str(tmp_path / "one"), auto, progress=False)
    assert manifest.channels == 1 and read_manifest(str(tmp_path / "one")).channels == 1
    Image.new("RGB", (16, 16), (10, 200, 30)).save(folder / "colour.png")
    assert prepare(str(folder), str(tmp_path / "three"), auto, progress=False)[0].channels == 3
    asked = PrepareOptions(ImageSpec(16, 3), shuffle_seed=None)  # asked for: kept, colour or not
    Image.open(folder / "colour.png").convert("L").save(folder / "colour.png")
    assert prepare(str(folder), str(tmp_path / "asked"), asked, progress=False)[0].channels == 3
    assert prepare(str(folder), str(tmp_path / "gray-again"), auto, progress=False)[0].channels == 1
    gray_array = ArraySource(np.zeros((2, 8, 8), np.uint8), None, [], "a")
    assert gray_array.grayscale() and not ArraySource(np.zeros((2, 8, 8, 3), np.uint8), None, [], "a").grayscale()


def test_center_crop_and_exif_rotation():
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # a white centre square between black sides
    assert to_square_array(Image.fromarray(wide), ImageSpec(20, 3)).min() == 255
    assert to_square_array(Image.fromarray(wide), ImageSpec(20, 3, crop="none")).min() == 0

    tall = np.zeros((60, 20, 3), np.uint8)
    tall[:20] = 255  # white top third; EXIF says rotate 90° clockwise for display, so it becomes the right third
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(tall).save(buffer, format="PNG", exif=exif)
    shown = decode_file(buffer.getvalue())
    assert shown.size == (60, 20)
    assert np.asarray(shown)[:, -5:].min() == 255 and np.asarray(shown)[:, :5].max() == 0


def test_decompression_bomb_is_refused_before_decoding():
    from media import decompression_bomb

    with pytest.raises(Skip, match="decompression bomb"):
        decode_file(decompression_bomb())


def test_png_shards_decode_to_the_same_pixels_and_jpeg_close(tmp_path):
    ramp = np.linspace(0, 150, 16)[None, :, None, None] + np.linspace(0, 40, 16)[None, None, :, None]
    images = (ramp + np.arange(40)[:, None, None, None] + np.array([0, 3, 5])).astype(np.uint8)  # smooth pictures
    decoded = {}
    for fmt in ("raw", "png", "jpeg"):
        out = str(tmp_path / fmt)
        opts = PrepareOptions(ImageSpec(16, 3), fmt=fmt, shard_size=16, shuffle_seed=None)
        write_dataset(ArraySource(images, None, [], "arrays"), out, opts, progress=False)
        decoded[fmt] = load_columns(out, read_manifest(out))["image"]
    np.testing.assert_array_equal(decoded["raw"], images)
    np.testing.assert_array_equal(decoded["png"], images)
    assert np.abs(decoded["jpeg"].astype(int) - images).mean() < 2  # lossy, but the same pictures


def test_npz_source_with_labels_and_float_images(tmp_path):
    images = np.random.default_rng(2).random((30, 20, 20))  # floats in [0, 1], no channel axis
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(30) % 3)
    manifest, _ = prepare(str(tmp_path / "d.npz"), str(tmp_path / "out"),
                          PrepareOptions(ImageSpec(16, 1), shuffle_seed=None), progress=False)
    assert (manifest.count, manifest.class_names) == (30, ["0", "1", "2"])
    table = pq.read_table(tmp_path / "out" / manifest.shards[0])
    assert table.column("label").to_pylist() == [i % 3 for i in range(30)]


def _write_idx(path, array: np.ndarray) -> None:
    """The MNIST file format: a magic number with the element type and rank, the dimensions, then the data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_dataset_read_from_disk(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    digits = np.random.default_rng(3).integers(0, 256, (12, 28, 28))
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", digits)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(12) % 10)
    manifest, _ = prepare("mnist", str(tmp_path / "out"), PrepareOptions(ImageSpec(32, None), shuffle_seed=None),
                          root=str(tmp_path), progress=False)
    assert manifest.count == 12 and manifest.class_names[0].startswith("0")
    assert manifest.channels == 1  # MNIST's images are L: one channel without asking
    assert pq.read_table(tmp_path / "out" / manifest.shards[0]).column("label").to_pylist() == list(range(10)) + [0, 1]


def test_interrupted_prepare_leaves_no_manifest(tmp_path):
    interrupted_prepare(str(tmp_path / "out"), shard_size=10)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    with pytest.raises(UserError, match="missing _manifest.json"):
        read_manifest(str(tmp_path / "out"))


@pytest.mark.parametrize(
    "source, files, expected",
    [
        ("missing-folder/", None, "does not exist or is not a folder"),
        ("empty", [], "no image files under"),
        ("texts", ["a.txt", "b.csv"], "no image files under"),
        ("missing.npz", None, "no such file"),
        ("CIFAR10", None, "pass --root DIR"),
    ],
)
@pytest.mark.slow
def test_bad_sources_are_one_line_errors(tmp_path, source, files, expected):
    if files is not None:
        (tmp_path / source).mkdir()
        for name in files:
            (tmp_path / source / name).write_text("x")
    done = run("prepare", source, str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "_manifest.json").exists()


@pytest.mark.slow
def test_missing_bucket_and_wrong_credentials_are_one_line_errors(s3_server, bucket, tmp_path):
    folder = tmp_path / "few"
    (folder / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(folder / "a" / f"{i}.png")

    done = run("prepare", str(folder), "s3://no-such-bucket-here/ds")
    assert done.returncode == 2
    assert done.stderr.strip() == "gan-dist: error: bucket 'no-such-bucket-here' of s3://no-such-bucket-here/ds " \
                                  "does not exist; create it or fix the URI"

    done = run("prepare", str(folder), f"s3://{bucket}/ds", env=dict(os.environ, AWS_SECRET_ACCESS_KEY="wrong-secret"))
    assert done.returncode == 2 and "check the bucket, AWS_* credentials" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "wrong-secret" not in done.stderr  # never echo secrets
    assert s3_client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0



# --- Odd inputs users give `gan-dist prepare`: the right pixels, or a one-line refusal that names the fix. ---

TARGET = np.arange(0, 256, 17, dtype=np.uint8).reshape(1, 4, 4).repeat(3, axis=0)  # 0..255, both ends included


def _prepare_npz(tmp_path, images, labels=None):
    """4×4 images (and labels) saved as a user would, with np.savez, prepared at their own size in source order."""
    np.savez(tmp_path / "d.npz", images=images, **({} if labels is None else {"labels": labels}))
    options = PrepareOptions(ImageSpec(4, 1), shuffle_seed=None)
    return prepare(str(tmp_path / "d.npz"), str(tmp_path / "out"), options, progress=False)[0]


def _refused(call, *expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        call()
    message = str(excinfo.value)
    assert "\n" not in message and "pickle" not in message.lower(), message  # one line; never advise unpickling
    for text in expected:
        assert text in message, message


@pytest.mark.parametrize("as_float", [
    pytest.param(lambda t: t / 255.0, id="0..1"),
    pytest.param(lambda t: t / 127.5 - 1.0, id="-1..1"),
    pytest.param(lambda t: t + np.where(t == 0, 0.3, -0.3), id="0..255"),  # not whole: rounded
])
def test_float_npz_pixels_are_scaled_by_the_range_of_the_whole_array(tmp_path, as_float):
    manifest = _prepare_npz(tmp_path, as_float(TARGET.astype(np.float64)).astype(np.float32))
    np.testing.assert_array_equal(load_columns(str(tmp_path / "out"), manifest)["image"][..., 0], TARGET)


def test_float_range_is_one_decision_for_all_images_not_a_guess_per_image(tmp_path):
    images = TARGET.astype(np.float64)
    images[0] = np.linspace(0.0, 1.0, 16).reshape(4, 4)  # a near-black image in a 0..255 dataset: stays near-black
    manifest = _prepare_npz(tmp_path, images)
    pixels = load_columns(str(tmp_path / "out"), manifest)["image"][..., 0]
    np.testing.assert_array_equal(pixels[0], np.rint(images[0]))
    np.testing.assert_array_equal(pixels[1:], TARGET[1:])


@pytest.mark.parametrize("images, expected", [
    pytest.param(TARGET.astype(np.uint16), TARGET, id="uint16-within-0..255"),
    pytest.param(TARGET.astype(np.int64), TARGET, id="int64-within-0..255"),
    pytest.param(TARGET > 100, np.where(TARGET > 100, 255, 0), id="bool-mask"),
])
def test_integer_and_bool_npz_pixels(tmp_path, images, expected):
    manifest = _prepare_npz(tmp_path, images)
    np.testing.assert_array_equal(load_columns(str(tmp_path / "out"), manifest)["image"][..., 0], expected)


@pytest.mark.parametrize("images, expected", [
    pytest.param(np.where(TARGET > 100, np.nan, 0.5), "nan..nan", id="nan"),
    pytest.param(np.where(TARGET > 100, np.inf, 0.5), "0.5..inf", id="inf"),
    pytest.param(np.where(TARGET > 100, -3.0, 0.5), "-3..0.5", id="below-minus-1"),
    pytest.param(np.where(TARGET > 100, 300.0, 0.5), "0.5..300", id="above-255"),
    pytest.param(TARGET.astype(np.uint16) * 257, "uint16 pixel values span 0..65535", id="uint16-full-range"),
    pytest.param(TARGET.astype(np.int16) - 5, "int16 pixel values span -5..250", id="negative-int"),
    pytest.param(TARGET.astype(np.complex64), "dtype complex64", id="complex"),
])
def test_npz_pixels_outside_the_accepted_ranges_are_refused(tmp_path, images, expected):
    accepted = "[0, 1], [-1, 1] or [0, 255]" if images.dtype.kind == "f" else "uint8"
    _refused(lambda: _prepare_npz(tmp_path, images), "d.npz", expected, accepted)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels, names, indices", [
    pytest.param(np.array(["dog", "cat", "dog"]), ["cat", "dog"], [1, 0, 1], id="strings"),
    pytest.param(np.array([b"b", b"a", b"b"]), ["a", "b"], [1, 0, 1], id="bytes"),
    pytest.param(np.array([1.0, 0.0, 2.0]), ["0", "1", "2"], [1, 0, 2], id="whole-floats"),
    pytest.param(np.array([9, 0, 5]), ["0", "5", "9"], [2, 0, 1], id="gaps"),  # indices that match the names
    pytest.param(np.array([[1], [0], [1]]), ["0", "1"], [1, 0, 1], id="N×1"),
])
def test_npz_labels_become_class_indices_named_by_their_values(tmp_path, labels, names, indices):
    manifest = _prepare_npz(tmp_path, TARGET, labels)
    assert manifest.class_names == names
    assert pq.read_table(tmp_path / "out" / manifest.shards[0]).column("label").to_pylist() == indices


def _save_raw(data: bytes):
    return lambda path: path.write_bytes(data)


def _save_npy(path):
    with open(path, "wb") as handle:
        np.save(handle, TARGET)


@pytest.mark.parametrize("save, expected", [
    pytest.param(lambda p: np.savez(p, images=np.array([np.zeros((4, 4)), np.zeros((5, 5))], dtype=object)),
                 "array 'images' holds Python objects", id="object-images"),
    pytest.param(lambda p: np.savez(p, images=TARGET, labels=np.array(["a", 1, None], dtype=object)),
                 "array 'labels' holds Python objects", id="object-labels"),
    pytest.param(_save_raw(b"<html>a web page saved under the wrong name</html>"), "is not an .npz archive",
                 id="text-file"),
    pytest.param(_save_raw(b""), "is not an .npz archive", id="empty-file"),
    pytest.param(_save_npy, "is not an .npz archive", id="npy-named-npz"),
    pytest.param(lambda p: np.savez(p), "holds no arrays", id="no-arrays"),
    pytest.param(lambda p: np.savez(p, images=np.zeros(5)), "images must be N×H×W", id="rank-1"),
    pytest.param(lambda p: np.savez(p, images=np.zeros((0, 4, 4), np.uint8)), "holds no images", id="no-images"),
    pytest.param(lambda p: np.savez(p, images=TARGET, labels=np.array([0, 0.5, 1])), "whole class ids, got 0.5",
                 id="fractional-labels"),
    pytest.param(lambda p: np.savez(p, images=TARGET, labels=np.eye(3)), "labels.argmax(1)", id="one-hot-labels"),
    pytest.param(lambda p: np.savez(p, images=TARGET, labels=np.arange(4)), "4 labels for 3 images",
                 id="labels-length"),
])
def test_bad_npz_files_are_one_line_refusals(tmp_path, save, expected):
    save(tmp_path / "d.npz")
    options = PrepareOptions(ImageSpec(4, 1))
    _refused(lambda: prepare(str(tmp_path / "d.npz"), str(tmp_path / "out"), options, progress=False), expected)


@pytest.mark.slow
def test_bad_npz_through_the_console_script_never_advises_unpickling(tmp_path):
    np.savez(tmp_path / "objects.npz", images=np.array([np.zeros((4, 4)), np.zeros((5, 5))], dtype=object))
    (tmp_path / "page.npz").write_text("<html>a web page saved under the wrong name</html>")
    for name, expected in (("objects.npz", "holds Python objects"), ("page.npz", "is not an .npz archive")):
        done = run("prepare", name, "out", cwd=tmp_path)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert "pickle" not in done.stderr.lower()


@pytest.mark.slow
def test_every_input_skipped_says_why_in_its_one_line(tmp_path):
    (tmp_path / "tiny").mkdir()
    for i in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / "tiny" / f"{i}.png")
    (tmp_path / "tiny" / "notes.txt").write_text("x")
    done = run("prepare", "tiny", "out", "--limit", "1", "--shuffle-seed", "-1", cwd=tmp_path)  # min size 32/4
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("prepare: ")]  # not the progress line
    assert errors == ["gan-dist: error: every input was skipped, nothing was written: 3 too small, 1 not an image "
                      "file; first: tiny/0.png (too small); lower --min-size to keep small images"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_out_that_is_a_file_or_holds_other_files_is_refused_before_any_reading(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    # The source does not exist: the refusal names OUT, so OUT was checked first.
    _refused(lambda: prepare("missing.npz", str(tmp_path / "notes.txt"), PrepareOptions(SPEC32), progress=False),
             "OUT", "notes.txt", "is not a folder")
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    done = run("prepare", "photos", "photos", cwd=tmp_path)  # the source folder given as OUT too
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "gan-dist: error: OUT photos is not empty (1 other entries, e.g. a.png); choose " \
                                  "another OUT or empty it first"
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_out_holding_only_an_interrupted_prepare_is_accepted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("shard-00000.parquet", "shard-00001.parquet.tmp", ".gan-dist-probe-x"):
        (out / name).write_bytes(b"left over")
    manifest = write_dataset(ArraySource(TARGET, None, [], "arrays"), str(out),
                             PrepareOptions(ImageSpec(4, 1), shuffle_seed=None), progress=False)[0]
    np.testing.assert_array_equal(load_columns(str(out), manifest)["image"][..., 0], TARGET)


@pytest.mark.parametrize("options, flag", [
    (dict(spec=ImageSpec(0, 3)), "--resolution must be at least 1, got 0"),
    (dict(spec=ImageSpec(32, 3, min_size=-4)), "--min-size must be at least 0, got -4"),
    (dict(spec=ImageSpec(32, 2)), "--channels must be 1 or 3, got 2"),
    (dict(spec=SPEC32, workers=0), "--workers must be at least 1"),
    (dict(spec=SPEC32, limit=0), "--limit must be at least 1"),
    (dict(spec=SPEC32, shard_size=0), "--shard-size must be at least 1"),
    (dict(spec=SPEC32, shuffle_seed=-5), "--shuffle-seed must be a seed >= 0, or -1"),
])
def test_bad_prepare_options_are_refused_by_flag(options, flag):
    _refused(lambda: PrepareOptions(**options), flag)


def test_shuffle_seed_minus_one_keeps_the_source_order(tmp_path):
    options = PrepareOptions(ImageSpec(4, 1), shuffle_seed=-1)
    assert options.shuffle_seed is None
    manifest = write_dataset(ArraySource(TARGET, None, [], "arrays"), str(tmp_path / "out"), options, progress=False)[0]
    np.testing.assert_array_equal(load_columns(str(tmp_path / "out"), manifest)["image"][..., 0], TARGET)


def test_source_that_is_a_file_but_no_npz(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"not read")
    _refused(lambda: prepare(str(tmp_path / "photo.png"), str(tmp_path / "out"), PrepareOptions(SPEC32),
                             progress=False), "photo.png is a file", ".npz")


def test_folder_classes_are_the_subfolders_with_images_and_links_are_followed_once(tmp_path):
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    for folder in (root / "cats", root / "empty", root / ".git", elsewhere / "dogs"):
        folder.mkdir(parents=True)
    for path in (root / "cats" / "c.png", root / ".git" / "h.png", elsewhere / "dogs" / "d1.png",
                 elsewhere / "dogs" / "d2.png", elsewhere / "stray.png"):
        Image.new("RGB", (32, 32)).save(path)
    os.symlink(elsewhere / "dogs", root / "dogs")  # a class folder kept elsewhere
    os.symlink(root, root / "cats" / "loop")  # back to the root: an endless path
    os.symlink(tmp_path, root / "cats" / "up")  # above the root: would read elsewhere/stray.png
    manifest, report = prepare(str(root), str(tmp_path / "out"), PrepareOptions(SPEC32, shuffle_seed=None),
                               progress=False)
    assert manifest.class_names == ["cats", "dogs"]  # not the empty folder, not .git
    assert (manifest.count, report.counts) == (3, Counter())
    assert pq.read_table(tmp_path / "out" / manifest.shards[0]).column("label").to_pylist() == [0, 1, 1]
