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

from conftest import s3_client, tiny_config
from gan_dist.data.images import ImageSpec, Skip, decode_file, to_square_array
from gan_dist.data.prepare import PrepareOptions, prepare, write_dataset
from gan_dist.data.reader import load_images, read_manifest
from gan_dist.data.sources import ArraySource
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from media import make_mixed_folder
from test_cli import run

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

    images = load_images(uri, read_manifest(uri))
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
        decoded[fmt] = load_images(out, read_manifest(out))
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
    manifest, _ = prepare("mnist", str(tmp_path / "out"), PrepareOptions(ImageSpec(32, 1), shuffle_seed=None),
                          root=str(tmp_path), progress=False)
    assert manifest.count == 12 and manifest.class_names[0].startswith("0")
    assert pq.read_table(tmp_path / "out" / manifest.shards[0]).column("label").to_pylist() == list(range(10)) + [0, 1]


def test_interrupted_prepare_leaves_no_manifest(tmp_path):
    class Interrupting(ArraySource):
        def label(self, index):
            if index == 25:
                raise KeyboardInterrupt
            return None

    images = np.zeros((40, 8, 8, 1), np.uint8)
    opts = PrepareOptions(ImageSpec(8, 1), shard_size=10, shuffle_seed=None)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(Interrupting(images, None, [], "arrays"), str(tmp_path / "out"), opts, progress=False)
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
def test_bad_sources_are_one_line_errors(tmp_path, source, files, expected):
    if files is not None:
        (tmp_path / source).mkdir()
        for name in files:
            (tmp_path / source / name).write_text("x")
    done = run("prepare", source, str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "_manifest.json").exists()


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
