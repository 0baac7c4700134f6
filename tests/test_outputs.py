"""Where `report`, `sample` and `bench --json` write, as a user points them: nothing written before is lost, and
every refusal is one line, before any work."""

from pathlib import Path

import pytest
from PIL import Image

from conftest import tiny_config
from gan_dist.runtime.storage import check_output_file
from gan_dist.runtime.launch import train
from test_cli import run

UNWRITABLE = "/proc/gan-dist-out"  # no file can be made in /proc, not even by root (chmod stops only non-root)
NO_BUCKET = "s3://gan-dist-no-such-bucket"


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("runs")
    train(tiny_config(tiny_data, str(storage), **{"train.steps": 4, "train.log_every": 1, "train.checkpoint_every": 2,
                                                  "train.sample_every": 4}))
    return storage / "tiny"


@pytest.fixture
def written(tmp_path) -> dict[Path, bytes]:
    """Files a user wrote before: a lone file, and a folder with a file in it."""
    files = {tmp_path / "notes.txt": b"keep me\n", tmp_path / "plots" / "old.png": b"an older plot"}
    for path, data in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    return files


def refused(done, *expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for text in expected:
        assert text in done.stderr


def unchanged(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.read_bytes() == data, path


@pytest.mark.parametrize("run_dir, expected", [
    ("missing", "no run at"),
    ("notes.txt", "is a file, not a run directory"),
    ("empty", "has no metrics yet"),
    ("checkpoints-only", "no metrics.jsonl in"),
])
def test_report_of_what_is_not_a_run_is_one_line(run_dir, expected, tmp_path, written):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_bytes(b"")
    (tmp_path / "checkpoints-only").mkdir()
    refused(run("report", run_dir, cwd=tmp_path), expected)
    unchanged(written)


@pytest.mark.parametrize("out, expected", [
    ("notes.txt/curves.png", "notes.txt is not a folder"),
    (UNWRITABLE + "/curves.png", "cannot be written"),
])
def test_report_out_that_cannot_be_written_is_one_line(out, expected, tmp_path, written, tiny_run):
    refused(run("report", str(tiny_run), "--out", out, cwd=tmp_path), f"--out {out}", expected)
    unchanged(written)


def test_report_out_folder_gets_curves_inside_and_an_out_file_is_replaced(tmp_path, written, tiny_run):
    assert run("report", str(tiny_run), "--out", "plots", cwd=tmp_path).returncode == 0
    assert Image.open(tmp_path / "plots" / "curves.png").format == "PNG"  # like cp: into the folder
    assert run("report", str(tiny_run), "--out", "notes.txt", cwd=tmp_path).returncode == 0
    assert Image.open(tmp_path / "notes.txt").format == "PNG"  # the file the user named
    unchanged({tmp_path / "plots" / "old.png": b"an older plot"})


@pytest.mark.parametrize("out, expected", [
    ("notes.txt", "--out notes.txt is not a folder"),
    ("notes.txt/samples", "notes.txt is a file"),
    (UNWRITABLE, "cannot be written"),
])
def test_sample_out_that_cannot_hold_images_is_refused_before_the_checkpoint_is_read(out, expected, tmp_path,
                                                                                     written):
    refused(run("sample", "no-such-checkpoint", "--num", "2", "--out", out, cwd=tmp_path), expected)
    unchanged(written)


def test_sample_never_overwrites_earlier_samples(tmp_path, tiny_run):
    checkpoint = f"{tiny_run}/checkpoint_000000004/"  # a trailing slash, as shell completion leaves it
    first = run("sample", checkpoint, "--num", "3", "--seed", "-1", "--out", "draw", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {path: path.read_bytes() for path in (tmp_path / "draw").iterdir()}
    assert sorted(path.name for path in before) == ["sample_00000.png", "sample_00001.png", "sample_00002.png"]
    refused(run("sample", checkpoint, "--num", "3", "--seed", "7", "--out", "draw", cwd=tmp_path),
            "draw already holds 3 sample_*.png; choose another --out or delete them")
    unchanged(before)


def test_sample_seed_beyond_torchs_range_is_one_line(tmp_path, tiny_run):
    refused(run("sample", str(tiny_run), "--out", "draw", "--seed", str(2**64), cwd=tmp_path),
            f"--seed {2**64} is out of range")
    assert not (tmp_path / "draw").exists()


def test_sample_from_a_run_without_checkpoints_is_one_line(tmp_path, tiny_run):
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_bytes((tiny_run / "metrics.jsonl").read_bytes())
    refused(run("sample", "fresh", "--out", "draw", cwd=tmp_path), "checkpoint at fresh")


def test_missing_bucket_is_one_line(s3_server, tmp_path, tiny_run):
    refused(run("report", f"{NO_BUCKET}/runs/a"), "bucket 'gan-dist-no-such-bucket'", "does not exist")
    refused(run("report", str(tiny_run), "--out", f"{NO_BUCKET}/curves.png"), "does not exist")
    refused(run("sample", str(tiny_run), "--out", f"{NO_BUCKET}/draw"), "does not exist")
    refused(run("sample", f"{NO_BUCKET}/runs/a", "--out", "draw", cwd=tmp_path), "does not exist")


@pytest.mark.parametrize("target, expected", [
    ("plots", "--json plots is a folder"),
    ("notes.txt/bench.json", "notes.txt is not a folder"),
    (UNWRITABLE + "/bench.json", "cannot be written"),
])
def test_bench_json_target_that_cannot_be_written_is_refused(target, expected, tmp_path, written):
    # Refused before the benchmark: with a good target this command would run for minutes.
    refused(run("bench", "--device", "cpu", "--json", target, cwd=tmp_path), expected)
    unchanged(written)


def test_bench_json_target_may_be_new_or_an_existing_file(tmp_path, written, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for target in ("notes.txt", "bench.json", "results/new/bench.json"):
        check_output_file(target, "--json")
    unchanged(written)
