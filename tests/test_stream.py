"""The streaming reader: row groups read and decoded in DataLoader workers, fixed-shape uint8 batches, exact resume."""

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gan_dist.data.images import ImageSpec
from gan_dist.data.prefetch import to_device_ahead
from gan_dist.data.prepare import PrepareOptions, write_dataset
from gan_dist.data.reader import DataPosition, read_manifest
from gan_dist.data.sources import ArraySource
from gan_dist.data.stream import StreamReader, read_units, round_robin_taken
from gan_dist.errors import UserError
from helpers import numbered_images, row_ids

COUNT, SHARD, RES, CH, BATCH = 200, 24, 4, 3, 8  # 9 shards: eight of 24 rows, one of 8


def make_dataset(out: Path) -> str:
    """Numbered images in file order (no prepare shuffle), so image i is row i of the concatenated shards."""
    # Labeled by row (row % 7), so a test can check that each label travels with its image.
    source = ArraySource(numbered_images(COUNT, RES, CH), np.arange(COUNT) % 7, [str(k) for k in range(7)], "numbered")
    write_dataset(source, str(out), PrepareOptions(ImageSpec(RES, CH), shard_size=SHARD, shuffle_seed=None),
                  progress=False)
    return str(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return make_dataset(tmp_path_factory.mktemp("stream") / "d")


def reader(data: str, **kw) -> StreamReader:
    args = dict(batch_size=BATCH, rank=0, world_size=1, seed=5, shuffle=True, device="cpu", workers=2)
    return StreamReader(data, read_manifest(data), **{**args, **kw})


def take(r: StreamReader, n: int, start: DataPosition = DataPosition()) -> list[tuple[torch.Tensor, DataPosition]]:
    it = r.batches(start)
    try:
        return [next(it) for _ in range(n)]
    finally:
        it.close()


def ids(items) -> list[int]:
    return sum((row_ids(batch) for batch, _ in items), [])


def unit_rows(unit: int) -> list[int]:
    """The row numbers in shard `unit` (one row group per shard, as prepare writes them)."""
    return list(range(unit * SHARD, min((unit + 1) * SHARD, COUNT)))


def test_to_device_ahead_on_cpu_hands_over_the_same_objects():
    items = [(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), DataPosition(0, i)) for i in range(1, 4)]
    source = iter(items)
    out = to_device_ahead(source, torch.device("cpu"))
    assert out is source
    assert all(got[0] is want[0] and got[1] is want[1] for got, want in zip(out, items, strict=True))


def test_round_robin_accounting_follows_the_dataloader_rotation():
    # Rotation over workers holding 3, 1 and 2 batches: w0 w1 w2 | w0 w2 | w0.
    assert round_robin_taken([3, 1, 2], 0) == ([0, 0, 0], 0)
    assert round_robin_taken([3, 1, 2], 4) == ([2, 1, 1], 2)
    assert round_robin_taken([3, 1, 2], 5) == ([2, 1, 2], 0)
    assert round_robin_taken([3, 1, 2], 6) == ([3, 1, 2], 0)


def test_two_ranks_split_an_epoch_into_disjoint_fixed_shape_batches(data):
    readers = [reader(data, rank=rank, world_size=2) for rank in range(2)]
    length = readers[0].batches_per_epoch(0)
    assert readers[1].batches_per_epoch(0) == length  # one position means the same place on every rank
    seen = []
    order = readers[0]._order(0).tolist()
    for rank, r in enumerate(readers):
        items = take(r, length + 1)  # one batch into the next epoch
        assert [pos for _, pos in items] == [DataPosition(0, b) for b in range(1, length + 1)] + [DataPosition(1, 1)]
        for batch, _ in items:
            image = batch["image"]
            assert image.dtype == torch.uint8 and image.shape == (BATCH, RES, RES, CH) and image.device.type == "cpu"
            assert batch["label"].tolist() == [row % 7 for row in row_ids(batch)]
        epoch = ids(items[:length])
        assert len(set(epoch)) == len(epoch) == length * BATCH
        assert set(epoch) <= set(sum((unit_rows(u) for u in order[rank::2]), []))  # only this rank's units
        seen.append(epoch)
    assert set(seen[0]).isdisjoint(seen[1])
    # Dropped: each worker's final partial batch, and the longer rank's rows beyond the shorter one's.
    rank_rows = [sum(len(unit_rows(u)) for u in order[rank::2]) for rank in range(2)]
    assert COUNT - 2 * 2 * BATCH - abs(rank_rows[0] - rank_rows[1]) <= len(seen[0]) + len(seen[1]) <= COUNT


def test_rows_of_the_dataset_come_out_exactly_as_stored(data):
    (batch, _), = take(reader(data, shuffle=False, workers=1), 1)
    np.testing.assert_array_equal(batch["image"].numpy(), numbered_images(COUNT, RES, CH)[:BATCH])
    assert batch["label"].tolist() == [row % 7 for row in range(BATCH)]


def test_order_is_a_function_of_seed_and_epoch(data):
    a, b = reader(data), reader(data)
    length = a.batches_per_epoch(0)
    first = ids(take(a, length))
    assert ids(take(b, length)) == first
    assert sorted(first) != first  # shuffled
    assert ids(take(reader(data, seed=6), length)) != first
    assert ids(take(a, 3, DataPosition(1, 0))) != first[: 3 * BATCH]


def test_without_shuffle_batches_follow_file_order_round_robin_over_workers(data):
    one = reader(data, shuffle=False, workers=1)
    assert ids(take(one, 25)) == list(range(COUNT))
    # Two workers: worker 0 streams shards 0,2,4,6,8 (104 rows, 13 batches), worker 1 shards 1,3,5,7 (12
    # batches); the loader alternates between them and worker 0 hands over the last one alone.
    streams = [sum((unit_rows(u) for u in range(w, 9, 2)), []) for w in range(2)]
    expected = []
    for b in range(13):
        for w in range(2):
            if (b + 1) * BATCH <= len(streams[w]):
                expected += streams[w][b * BATCH : (b + 1) * BATCH]
    assert ids(take(reader(data, shuffle=False, workers=2), 25)) == expected


def test_in_process_reading_matches_one_worker_process_and_the_epoch_is_picklable(data):
    in_process, one_worker = reader(data, workers=0), reader(data, workers=1)
    assert ids(take(in_process, 6)) == ids(take(one_worker, 6))
    dataset, _ = in_process._epoch_dataset(0, 2)
    copy = pickle.loads(pickle.dumps(dataset))
    assert [row_ids(b) for b in copy] == [row_ids(b) for b in dataset]


def test_resume_continues_the_same_sequence_across_an_epoch_boundary(data):
    r = reader(data)
    length = r.batches_per_epoch(0)
    assert length == 25  # 13 + 12 batches: the odd one out comes from one worker alone
    full = take(r, length + 4)
    assert full[length - 1][1] == DataPosition(0, length) and full[length][1] == DataPosition(1, 1)
    # Mid-rotation (odd k), at a rotation boundary (even k), after one worker has finished, at the epoch's end,
    # and inside the next epoch.
    for k in (3, 10, length - 1, length, length + 2):
        resumed = take(r, 2, full[k - 1][1])
        for (got, got_pos), (want, want_pos) in zip(resumed, full[k : k + 2], strict=True):
            assert got_pos == want_pos
            assert all(torch.equal(got[name], want[name]) for name in ("image", "label"))


def test_units_are_row_groups(tmp_path):
    data = make_dataset(tmp_path / "d")
    manifest = read_manifest(data)
    for name in manifest.shards:  # rewrite every shard with row groups of 10 rows
        table = pq.read_table(Path(data, name))
        pq.write_table(table, Path(data, name), row_group_size=10)
    units = read_units(data, manifest)
    assert [(u.group, u.rows) for u in units[:3]] == [(0, 10), (1, 10), (2, 4)] and len(units) == 8 * 3 + 1
    r = reader(data, workers=2)
    epoch = ids(take(r, r.batches_per_epoch(0)))
    assert len(set(epoch)) == len(epoch) >= COUNT - 2 * BATCH


def test_closing_the_generator_stops_the_loader_workers(data):
    it = reader(data).batches(DataPosition())
    next(it)
    assert multiprocessing.active_children()
    it.close()
    assert not multiprocessing.active_children()


def test_a_batch_larger_than_a_rank_share_is_an_error(data):
    with pytest.raises(UserError, match="lower --batch-size"):
        reader(data, batch_size=64, world_size=2)
    with pytest.raises(UserError, match="9 row groups for 10 ranks"):
        reader(data, world_size=10)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_an_unreadable_shard_is_named(tmp_path, damage):
    data = make_dataset(tmp_path / "d")
    shard = Path(data, "shard-00003.parquet")
    shard.write_bytes(b"not parquet") if damage == "corrupt" else shard.unlink()
    with pytest.raises(UserError, match=r"cannot read shard .*shard-00003\.parquet.*gan-dist prepare"):
        reader(data)


def test_a_shard_that_breaks_while_training_is_a_one_line_error(tmp_path):
    data = make_dataset(tmp_path / "d")
    r = reader(data, shuffle=False)
    Path(data, "shard-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"shard-00001\.parquet") as caught:
        take(r, 25)
    assert "\n" not in str(caught.value)
