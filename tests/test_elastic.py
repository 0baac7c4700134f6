"""Elastic workers (`--num-workers MIN-MAX`): what stays constant when the number of workers changes, and the
refusals. The runs that lose and regain a node are in test_elastic_cluster.py."""

import pytest

from gan_dist.config import load_config
from gan_dist.data.reader import DataPosition, InMemoryReader
from gan_dist.errors import UserError
from gan_dist.train.state import TrainState
from helpers import numbered_images, row_ids

ELASTIC = load_config(None, {"run.num_workers": "2-4", "run.backend": "ray", "train.batch_size": 2})  # global 8


def elastic_reader(rank: int, workers: int) -> InMemoryReader:
    """A worker of an elastic run: every row, one order shared by all, its share of each global batch."""
    return InMemoryReader({"image": numbered_images(64)}, ELASTIC.global_batch(workers), seed=5, shuffle=True,
                          take=ELASTIC.step_share(rank, workers))


def step_rows(workers: int, start: DataPosition, steps: int) -> tuple[list[list[int]], DataPosition]:
    """The rows each step trains on over all `workers`, and the position after them."""
    streams = [elastic_reader(rank, workers).batches(start) for rank in range(workers)]
    rows, at = [], start
    for _ in range(steps):
        parts = [next(stream) for stream in streams]
        assert sum(len(row_ids(batch)) for batch, _ in parts) == 8
        rows.append(sum((row_ids(batch) for batch, _ in parts), []))
        at = parts[0][1]
    return rows, at


def test_a_resized_run_trains_each_step_on_the_rows_of_a_run_that_never_resized():
    straight, _ = step_rows(4, DataPosition(), 16)  # two epochs of 8 steps
    first, at = step_rows(4, DataPosition(), 3)
    middle, at = step_rows(3, at, 6)  # a lost worker: on with three (shares 2, 3, 3), mid-epoch
    last, _ = step_rows(2, at, 7)  # and two, across the epoch boundary
    assert first + middle + last == straight
    for epoch in (straight[:8], straight[8:]):  # within an epoch no row skipped, none seen twice
        assert sorted(sum(epoch, [])) == list(range(64))


def test_a_fixed_size_worker_keeps_its_own_order_of_its_own_rows():
    whole = InMemoryReader({"image": numbered_images(64)}, 8, seed=5, shuffle=True)
    batch, _ = next(whole.batches(DataPosition()))
    assert row_ids(batch) == step_rows(2, DataPosition(), 1)[0][0]  # one order of the same rows either way
    other = InMemoryReader({"image": numbered_images(64)}, 8, seed=5, shuffle=True, rank=1)
    assert row_ids(next(other.batches(DataPosition()))[0]) != row_ids(batch)


def test_the_global_batch_is_the_same_at_every_size_and_split_as_evenly_as_it_goes():
    cfg = load_config(None, {"run.num_workers": "2-4", "train.batch_size": 8, "train.n_dis": 2})
    assert (cfg.run.elastic, cfg.run.min_workers, cfg.run.max_workers) == (True, 2, 4)
    for workers, batches in ((4, [8, 8, 8, 8]), (3, [10, 11, 11]), (2, [16, 16])):
        shares = [cfg.step_share(rank, workers) for rank in range(workers)]
        assert cfg.global_batch(workers) == 32
        assert [(share.stop - share.start) // 2 for share in shares] == batches  # images per D update
        assert shares[0].start == 0 and shares[-1].stop == 64  # both D updates' rows: the whole step, in order
        assert all(a.stop == b.start for a, b in zip(shares, shares[1:]))
    fixed = load_config(None, {"run.num_workers": 3, "train.batch_size": 6})
    assert fixed.global_batch(3) == 18 and fixed.step_share(1, 3) == slice(6, 12)


def _update_on_ranks(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank of a gloo group: its share of the global batch through Task.update, rank 0 saves the weights."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from gan_dist.train import speed
    from gan_dist.train.task import Task

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    net, x, y = linear_problem()
    task = Task(ELASTIC, torch.device("cpu"), rank, world_size)
    task.features = speed.resolve(ELASTIC.train, torch.device("cpu"), net)
    share = ELASTIC.step_share(rank, world_size)
    optimizer, replicated = torch.optim.SGD(net.parameters(), lr=1.0), DistributedDataParallel(net)
    task.update(optimizer, (replicated(x[share]) - y[share]).square().mean())
    if rank == 0:
        torch.save(net.state_dict(), out)
    dist.destroy_process_group()


def linear_problem():
    import torch

    torch.manual_seed(0)
    return torch.nn.Linear(4, 1), torch.randn(8, 4), torch.randn(8, 1)


@pytest.mark.slow
def test_workers_with_unequal_shares_update_as_one_worker_with_the_whole_global_batch(tmp_path):
    import torch
    import torch.multiprocessing as mp

    from helpers import free_port

    out = str(tmp_path / "three.pt")
    mp.spawn(_update_on_ranks, args=(3, free_port(), out), nprocs=3)  # shares of 8: 2, 3, 3
    three = torch.load(out, weights_only=True)
    net, x, y = linear_problem()
    whole = (net(x) - y).square().mean()
    gradients = torch.autograd.grad(whole, list(net.parameters()))
    for (name, after), before, gradient in zip(three.items(), net.parameters(), gradients):
        torch.testing.assert_close(after, before.detach() - gradient, rtol=1e-6, atol=1e-7)
    # Unweighted, the ranks' mean of their own means would not be the mean over every image.
    parts = [ELASTIC.step_share(rank, 3) for rank in range(3)]
    unweighted = sum(torch.autograd.grad((net(x[p]) - y[p]).square().mean(), net.weight)[0] for p in parts) / 3
    assert not torch.allclose(unweighted, gradients[0], rtol=1e-3)


def test_a_range_of_one_size_is_that_fixed_size():
    assert load_config(None, {"run.num_workers": "3-3"}).run.num_workers == 3
    assert load_config(None, {"run.num_workers": "3"}).run.num_workers == 3


def test_an_elastic_run_restarts_after_lost_workers_by_default():
    assert load_config(None, {"run.num_workers": "1-2"}).run.restarts() == 10
    assert load_config(None, {"run.num_workers": 2}).run.restarts() == 0
    assert load_config(None, {"run.num_workers": "1-2", "run.max_failures": 1}).run.restarts() == 1


@pytest.mark.parametrize("overrides, message", [
    ({"run.num_workers": "3-2"}, "MIN 3 is above MAX 2; write MIN-MAX with MIN <= MAX"),
    ({"run.num_workers": "0-2"}, "run.num_workers='0-2': at least 1 worker"),
    ({"run.num_workers": "two"}, "expected a number of workers (2) or a range MIN-MAX (2-4)"),
    ({"run.num_workers": "1-2", "run.backend": "local"}, "the local backend runs one process; use --backend ray for "
                                                         "--num-workers 1-2"),
])
def test_bad_ranges_are_refused_in_one_line(overrides, message):
    with pytest.raises(UserError) as refused:
        load_config(None, overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_state_records_each_change_of_size_and_carries_it_through_a_checkpoint():
    state = TrainState()
    assert state.on_workers(2) is None  # a new run: its first size, not a resize
    state.step = 10
    assert state.on_workers(2) is None  # a restart at the same size
    assert state.on_workers(1) == 2
    state.step = 20
    assert state.on_workers(2) == 1
    assert state.workers == [[0, 2], [10, 1], [20, 2]]
    assert TrainState.from_dict(state.to_dict()).workers == state.workers
    assert TrainState.from_dict({"step": 3, "images_seen": 9, "positions": {}}).workers == []  # older checkpoints


def test_data_smaller_than_one_global_batch_is_refused_in_one_line(tiny_data):
    from gan_dist.data.reader import read_manifest
    from gan_dist.runtime.launch import check_batch_fits

    cfg = load_config(None, {"run.num_workers": "2-4", "train.batch_size": 65})  # 260 > tiny_data's 256 rows
    with pytest.raises(UserError) as refused:
        check_batch_fits(cfg, "train", read_manifest(tiny_data))
    assert str(refused.value) == ("the dataset's 256 images are fewer than one step of the global batch "
                                  "(train.batch_size 65 × MAX 4 workers × n_dis 1); lower --batch-size or MAX")
    check_batch_fits(load_config(None, {"run.num_workers": "2-4", "train.batch_size": 64}), "train",
                     read_manifest(tiny_data))  # exactly one global batch: fits
