"""The console script as a user runs it: real processes, exit codes, files on disk."""

import pytest
from PIL import Image

from helpers import run

pytestmark = pytest.mark.slow  # console-script processes, and a 20-step run of the default preset


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    storage = tmp_path_factory.mktemp("cli-runs")
    done = run("train", "--backend", "local", "--steps", "20", "--storage", str(storage), "--name", "cli",
               "--set", "train.log_every=10", "--set", "train.sample_every=10", "--set", "train.checkpoint_every=10")
    return storage, done


def test_train_on_embedded_digits_writes_grids_and_checkpoints(trained_run):
    storage, done = trained_run
    assert done.returncode == 0, done.stderr
    assert "1797 images 32x32x1" in done.stdout and "step: 20/20 (100%)" in done.stdout
    # What the run chose for speed is on the console: the data kept in memory, the plain eager step on the CPU.
    assert "data: resident on cpu (1.8 MB per worker <= 25% of cpu's" in done.stdout
    assert "step: eager, bf16 off, fused Adam off, D forward real and fake apart" in done.stdout
    grid = Image.open(storage / "cli" / "samples" / "step_000000020.png")
    assert grid.size == (8 * 34 + 2, 10 * 34 + 2)  # the default is conditional: a row of 8 per digit, 32 px + 2 px
    assert sorted(p.name for p in (storage / "cli").glob("checkpoint_*")) == ["checkpoint_000000010", "checkpoint_000000020"]


def test_sample_writes_pngs_of_the_trained_size(trained_run, tmp_path):
    storage, _ = trained_run
    done = run("sample", str(storage / "cli" / "checkpoint_000000020"), "--num", "5", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    images = sorted((tmp_path / "out").glob("sample_*.png"))
    assert [p.name for p in images] == [f"sample_{i:05d}.png" for i in range(5)]
    # the default generator is conditional: without --class, the digits in turn
    assert (tmp_path / "out" / "labels.csv").read_text().splitlines()[1:] == [
        f"sample_{i:05d}.png,{i},{i}" for i in range(5)]
    for path in images:
        image = Image.open(path)
        assert (image.size, image.mode) == ((32, 32), "L")
        assert image.getextrema()[1] > image.getextrema()[0]  # not a blank image


def test_rerunning_a_run_without_resume_is_refused_and_keeps_it(trained_run):
    storage, _ = trained_run
    done = run("train", "--backend", "local", "--steps", "20", "--storage", str(storage), "--name", "cli")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "pass --resume" in done.stderr
    assert (storage / "cli" / "checkpoint_000000020" / "state.pt").is_file()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["train", "--steps", "0"], "must be at least 1"),
        (["train", "--backend", "local", "--num-workers", "2"], "local backend runs one process"),
        (["train", "--data", "/nonexistent/shards"], "run `gan-dist prepare` first"),
        (["sample", "/nonexistent/run", "--out", "x"], "no complete checkpoint at /nonexistent/run"),
        (["prepare", "mnist-from-nowhere", "out"], "is not a folder here"),
        (["prepare", "mnist-from-nowhere", "out", "--root", "."], "unknown source"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path):
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_every_subcommand_has_help():
    for command in ("prepare", "train", "sample"):
        done = run(command, "--help")
        assert done.returncode == 0 and "usage: gan-dist " + command in done.stdout
