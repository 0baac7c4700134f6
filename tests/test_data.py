import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from gan_dist.data.images import ImageSpec
from gan_dist.data.prepare import PrepareOptions, prepare, write_shards
from gan_dist.data.reader import DataPosition, InMemoryReader, load_columns, read_manifest, worker_rows
from gan_dist.errors import UserError
from helpers import numbered_images, row_ids


def test_prepare_digits_writes_raw_uint8_shards_readable_by_plain_pyarrow(tmp_path):
    out = tmp_path / "digits"
    spec = ImageSpec(32, 1)
    manifest, report = prepare("digits", str(out), PrepareOptions(spec, shard_size=512), progress=False)
    assert (manifest.count, manifest.resolution, manifest.channels, manifest.format) == (1797, 32, 1, "raw")
    assert not report.counts
    written = json.loads((out / "_manifest.json").read_text())
    assert written["shards"] == [f"shard-{i:05d}.parquet" for i in range(4)]
    assert len(written["content_hash"]) == 64
    # Independent of the project's reader: plain pyarrow, raw bytes, labels 0..9, shuffled across shards.
    tables = [pq.read_table(out / name) for name in written["shards"]]
    assert sum(t.num_rows for t in tables) == 1797
    first = tables[0]
    assert first.schema.field("label").type == "int32"
    assert sorted(set(first.column("label").to_pylist())) == list(range(10))
    pixels = np.frombuffer(first.column("image")[0].as_py(), np.uint8)
    assert pixels.size == 32 * 32 and pixels.max() > 200 and pixels.min() == 0  # ink over the full uint8 range


def test_reader_roundtrips_images(tmp_path):
    images = numbered_images(100, resolution=8, channels=3)
    write_shards(images, None, str(tmp_path / "d"), shard_size=30)
    manifest = read_manifest(str(tmp_path / "d"))
    np.testing.assert_array_equal(load_columns(str(tmp_path / "d"), manifest)["image"], images)


def test_preparing_into_a_finished_dataset_is_refused(tmp_path):
    write_shards(numbered_images(10), None, str(tmp_path / "d"))
    with pytest.raises(UserError, match="already holds a prepared dataset"):
        write_shards(numbered_images(10), None, str(tmp_path / "d"))


def test_manifest_that_does_not_match_its_shards_is_an_error(tmp_path):
    write_shards(numbered_images(10), None, str(tmp_path / "d"))
    path = tmp_path / "d" / "_manifest.json"
    path.write_text(path.read_text().replace('"resolution": 16', '"resolution": 8'))
    with pytest.raises(UserError) as caught:
        load_columns(str(tmp_path / "d"), read_manifest(str(tmp_path / "d")))["image"]
    # Names the dataset's shard and ends with the fix.
    assert str(caught.value) == (f"shard {tmp_path / 'd' / 'shard-00000.parquet'}: rows are not 64-byte raw images, "
                                 "so the manifest does not match its shards; re-run `gan-dist prepare`")


def test_missing_dataset_says_to_prepare(tmp_path):
    with pytest.raises(UserError, match="run `gan-dist prepare` first"):
        read_manifest(str(tmp_path / "nothing"))


def test_workers_load_disjoint_shares_that_cover_the_dataset(tmp_path):
    images = numbered_images(100, resolution=8)
    write_shards(images, None, str(tmp_path / "d"), shard_size=30)  # shares cross shard boundaries
    manifest = read_manifest(str(tmp_path / "d"))
    shares = [load_columns(str(tmp_path / "d"), manifest, worker_rows(100, rank, 3))["image"] for rank in range(3)]
    assert [len(share) for share in shares] == [33, 33, 34]
    np.testing.assert_array_equal(np.concatenate(shares), images)


def test_epochs_cover_the_rows_once_and_reshuffle():
    reader = InMemoryReader({"image": numbered_images(64)}, 8, seed=3, shuffle=True)
    it = reader.batches(DataPosition())
    first = sum((row_ids(next(it)[0]) for _ in range(8)), [])
    second = sum((row_ids(next(it)[0]) for _ in range(8)), [])
    assert sorted(first) == sorted(second) == list(range(64))
    assert first != second and first != list(range(64))
    other_worker = InMemoryReader({"image": numbered_images(64)}, 8, seed=3, shuffle=True, rank=1)
    assert row_ids(next(other_worker.batches(DataPosition()))[0]) != first[:8]


def test_reader_resumes_at_its_position():
    reader = InMemoryReader({"image": numbered_images(64)}, 8, seed=0, shuffle=True)
    it = reader.batches(DataPosition())
    seen = [next(it) for _ in range(11)]  # crosses into the second epoch
    assert seen[-1][1] == DataPosition(epoch=1, batch=3)
    resumed = next(reader.batches(seen[5][1]))
    assert row_ids(resumed[0]) == row_ids(seen[6][0])


def test_dataset_smaller_than_a_batch_is_an_error():
    with pytest.raises(UserError, match="lower --batch-size"):
        InMemoryReader({"image": numbered_images(6)}, 8, seed=0, shuffle=False)
