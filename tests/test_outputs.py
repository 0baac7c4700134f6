"""Where `report`, `sample` and `bench --json` write, as a user points them: nothing written before is lost, and
every refusal is one line, before any work."""

from pathlib import Path

import pytest
from PIL import Image

from gan_dist.bench import check_json_target
from gan_dist.errors import UserError
from gan_dist.report import PNG_SIGNATURE
from gan_dist.runtime.launch import train
from helpers import run, tiny_config

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
@pytest.mark.slow
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
@pytest.mark.slow
def test_report_out_that_cannot_be_written_is_one_line(out, expected, tmp_path, written, tiny_run):
    refused(run("report", str(tiny_run), "--out", out, cwd=tmp_path), f"--out {out}", expected)
    unchanged(written)


@pytest.mark.slow
def test_report_out_folder_gets_curves_inside_and_an_out_png_is_replaced(tmp_path, written, tiny_run):
    assert run("report", str(tiny_run), "--out", "plots", cwd=tmp_path).returncode == 0
    assert Image.open(tmp_path / "plots" / "curves.png").format == "PNG"  # like cp: into the folder
    (tmp_path / "plots" / "curves.png").write_bytes(PNG_SIGNATURE + b"an older drawing")
    assert run("report", str(tiny_run), "--out", "plots/curves.png", cwd=tmp_path).returncode == 0
    assert Image.open(tmp_path / "plots" / "curves.png").format == "PNG"  # the PNG the user named, replaced
    unchanged(written)


@pytest.mark.parametrize("out, expected", [
    ("notes.txt", "--out notes.txt: the curves are a PNG; pass a path ending in .png or a folder"),
    ("report.txt", "--out report.txt: the curves are a PNG; pass a path ending in .png or a folder"),
    ("plots/old.png", "--out plots/old.png is a file that is not a PNG"),  # judged by its bytes, not its name
    ("RUN/metrics.jsonl", "the curves are a PNG"),
    ("RUN/checkpoint_000000004/meta.json", "the curves are a PNG"),
    ("DATA/_manifest.json", "the curves are a PNG"),
])
@pytest.mark.slow
def test_report_out_never_replaces_what_is_not_a_png(out, expected, tmp_path, written, tiny_run, tiny_data):
    out = out.replace("RUN", str(tiny_run)).replace("DATA", tiny_data)
    theirs = (tiny_run / "metrics.jsonl", tiny_run / "checkpoint_000000004" / "meta.json",
              Path(tiny_data) / "_manifest.json")
    kept = {**written, **{path: path.read_bytes() for path in theirs}}
    refused(run("report", str(tiny_run), "--out", out, cwd=tmp_path), expected)
    unchanged(kept)
    assert not (tmp_path / "report.txt").exists()


@pytest.mark.parametrize("out, expected", [
    ("notes.txt", "--out notes.txt is not a folder"),
    ("notes.txt/samples", "notes.txt is a file"),
    (UNWRITABLE, "cannot be written"),
])
@pytest.mark.slow
def test_sample_out_that_cannot_hold_images_is_refused_before_the_checkpoint_is_read(out, expected, tmp_path,
                                                                                     written):
    refused(run("sample", "no-such-checkpoint", "--num", "2", "--out", out, cwd=tmp_path), expected)
    unchanged(written)


@pytest.mark.slow
def test_sample_never_overwrites_earlier_samples(tmp_path, tiny_run):
    checkpoint = f"{tiny_run}/checkpoint_000000004/"  # a trailing slash, as shell completion leaves it
    first = run("sample", checkpoint, "--num", "3", "--seed", "-1", "--out", "draw", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {path: path.read_bytes() for path in (tmp_path / "draw").iterdir()}
    assert sorted(path.name for path in before) == ["sample_00000.png", "sample_00001.png", "sample_00002.png"]
    refused(run("sample", checkpoint, "--num", "3", "--seed", "7", "--out", "draw", cwd=tmp_path),
            "draw already holds 3 sample_*.png; choose another --out or delete them")
    unchanged(before)


@pytest.mark.slow
def test_sample_seed_beyond_torchs_range_is_one_line(tmp_path, tiny_run):
    refused(run("sample", str(tiny_run), "--out", "draw", "--seed", str(2**64), cwd=tmp_path),
            f"--seed {2**64} is out of range")
    assert not (tmp_path / "draw").exists()


@pytest.mark.slow
def test_sample_from_a_run_without_checkpoints_is_one_line(tmp_path, tiny_run):
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_bytes((tiny_run / "metrics.jsonl").read_bytes())
    refused(run("sample", "fresh", "--out", "draw", cwd=tmp_path), "checkpoint at fresh")


@pytest.mark.slow
def test_missing_bucket_is_one_line(s3_server, tmp_path, tiny_run):
    refused(run("report", f"{NO_BUCKET}/runs/a"), "bucket 'gan-dist-no-such-bucket'", "does not exist")
    refused(run("report", str(tiny_run), "--out", f"{NO_BUCKET}/curves.png"), "does not exist")
    refused(run("sample", str(tiny_run), "--out", f"{NO_BUCKET}/draw"), "does not exist")
    refused(run("sample", f"{NO_BUCKET}/runs/a", "--out", "draw", cwd=tmp_path), "does not exist")


BENCH_RESULT = b'{"device": "cpu", "rows": []}'
TINY_BENCH = ("--device", "cpu", "--steps", "1", "--warmup", "1", "--repeats", "1", "--batch-size", "4",
              "--resolution", "16", "--channels", "1")  # a missed refusal fails in seconds, not minutes


@pytest.mark.parametrize("target, expected", [
    ("plots", "--json plots is a folder"),
    ("notes.txt/bench.json", "notes.txt is not a folder"),
    (UNWRITABLE + "/bench.json", "cannot be written"),
    ("notes.txt", "--json notes.txt: the rows are JSON; pass a path ending in .json"),
    ("bench.txt", "--json bench.txt: the rows are JSON; pass a path ending in .json"),
    ("data/_manifest.json", "--json data/_manifest.json is a file that is not an earlier bench result"),
    ("plots/old.json", "is a file that is not an earlier bench result"),  # not JSON at all
])
@pytest.mark.slow
def test_bench_json_target_that_cannot_be_written_is_refused(target, expected, tmp_path, written):
    files = {**written, tmp_path / "data" / "_manifest.json": b'{"resolution": 16, "count": 6}',
             tmp_path / "plots" / "old.json": b"an older plot"}
    for path, data in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    done = run("bench", *TINY_BENCH, "--json", target, cwd=tmp_path)
    refused(done, expected)
    assert not done.stdout  # refused before the benchmark, which at full size runs for minutes
    unchanged(files)
    assert not (tmp_path / "bench.txt").exists()


@pytest.mark.parametrize("content", [b'{"resolution": 16}', b"[1, 2]", b"\x89PNG\r\n", b""])
def test_bench_json_target_that_is_not_a_bench_result_is_refused(content, tmp_path):
    (tmp_path / "kept.json").write_bytes(content)
    with pytest.raises(UserError, match="is a file that is not an earlier bench result"):
        check_json_target(str(tmp_path / "kept.json"))
    assert (tmp_path / "kept.json").read_bytes() == content


def test_bench_json_target_may_be_new_or_an_earlier_result(tmp_path, written, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "earlier.json").write_bytes(BENCH_RESULT)
    for target in ("bench.json", "results/new/bench.json", "earlier.json", "BENCH.JSON"):
        check_json_target(target)
    unchanged({**written, tmp_path / "earlier.json": BENCH_RESULT})
