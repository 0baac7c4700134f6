"""The data benchmark (`gan-dist bench-data`) runs end to end (its numbers are for the note, not asserted)."""

import json
from pathlib import Path

import pytest

from gan_dist import bench, cli
from gan_dist.data.prepare import write_shards
from helpers import numbered_images


def test_data_benchmark_reports_every_format_and_size(tmp_path, capsys):
    assert cli.main(["bench-data", "--count", "64", "--root", str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[2], r[3]) for r in rows] == [("raw", "32"), ("raw", "64"), ("png", "32"), ("png", "64")]
    assert all(float(r[4].replace(",", "")) > 0 for r in rows)


REFERENCE = str(Path(__file__).parent / "data" / "reference_gan_bench.py")  # ../shared/reference's, vendored


def _bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", *args, "--device", "cpu", "--steps", "1", "--warmup", "1", "--repeats", "1",
                     "--reference", REFERENCE, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_step_benchmark_times_each_data_path_and_the_reference_loop(tmp_path, capsys):
    record = _bench(tmp_path, "dcgan-64", "--batch-size", "4")
    assert [row["path"] for row in record["rows"]] == ["synthetic", "resident", "stream", "reference"]
    assert all(row["img_per_s"] > 0 and row["step_ms"] > 0 for row in record["rows"])
    assert record["device"] == "cpu" and record["batch_size"] == 4
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["path", "img/s", "ms/step", "÷synthetic", "÷reference"]
    assert table[1].split()[3] == "1.00x" and table[4].split()[4] == "1.00x"  # each row's own ratio


def test_step_benchmark_refuses_to_compare_a_different_architecture(tmp_path):
    record = _bench(tmp_path, "--resolution", "16", "--channels", "1", "--batch-size", "4")
    reference = record["rows"][-1]
    assert reference["img_per_s"] == 0 and reference["note"].startswith("not comparable: reference dcgan64")


TINY = ["--device", "cpu", "--steps", "1", "--warmup", "1", "--repeats", "1", "--batch-size", "4", "--resolution", "16",
        "--channels", "1"]


@pytest.fixture
def no_work(monkeypatch):
    """Any shard written or step timed fails the test: each refusal must come before the work."""
    def work(*args, **kwargs):
        raise AssertionError("bench started work before refusing its input")
    monkeypatch.setattr(bench, "_synthetic_shards", work)
    monkeypatch.setattr(bench, "time_steps", work)


def refused(capsys, argv, *expected):
    assert cli.main(["bench", *TINY, *argv]) == 2  # later flags win over TINY's
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err


@pytest.mark.parametrize("resolution", ["7", "4", "12"])
def test_synthetic_resolution_no_model_takes_is_one_line(resolution, capsys, no_work):
    refused(capsys, ["--resolution", resolution], f"model.arch=dcgan cannot train on {resolution}x{resolution}")


def test_dataset_resolution_the_model_does_not_take_is_one_line(tmp_path, capsys, no_work):
    write_shards(numbered_images(8, resolution=8), None, str(tmp_path / "d8"))
    refused(capsys, ["--data", str(tmp_path / "d8"), "--set", "model.arch=resnet_sn"],
            "model.arch=resnet_sn cannot train on 8x8")


def test_dataset_smaller_than_a_batch_is_one_line_before_timing(tmp_path, capsys, no_work):
    write_shards(numbered_images(6), None, str(tmp_path / "d16"))
    refused(capsys, ["--data", str(tmp_path / "d16"), "--batch-size", "8"], "holds 6 images, fewer than one batch of 8")


def test_data_that_is_not_a_dataset_is_one_line(tmp_path, capsys, no_work):
    (tmp_path / "notes.txt").write_text("hi")
    refused(capsys, ["--data", str(tmp_path)], "no prepared dataset at")
    refused(capsys, ["--data", str(tmp_path / "notes.txt")], "notes.txt")


@pytest.mark.parametrize("name, content, expected", [
    ("missing.py", None, "does not exist"),
    ("folder", "", "is a folder"),
    ("notref.py", "x = 1\n", "lacks the reference's MODELS table"),
    ("broken.py", "def (:\n", "cannot be imported (SyntaxError"),
    ("exits.py", "raise SystemExit(3)\n", "cannot be imported (SystemExit: 3)"),
    ("notes.txt", "not python\n", "cannot be imported"),
])
def test_reference_that_is_not_the_reference_script_is_one_line(name, content, expected, tmp_path, capsys, no_work):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    refused(capsys, ["--reference", str(path)], f"--reference {path} {expected}",
            "pass the reference_gan_bench.py from shared/reference")
