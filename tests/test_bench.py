"""The data benchmark runs end to end (its numbers are for the note, not asserted)."""

import json
from pathlib import Path

from gan_dist import cli
from gan_dist.data.bench import main


def test_data_benchmark_reports_every_format_and_size(tmp_path, capsys):
    main(["--count", "64", "--root", str(tmp_path)])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[2], r[3]) for r in rows] == [("raw", "32"), ("raw", "64"), ("png", "32"), ("png", "64")]
    assert all(float(r[4].replace(",", "")) > 0 for r in rows)


REFERENCE = str(Path(__file__).parent / "data" / "reference_gan_bench.py")  # ../shared/reference's, vendored


def _bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", *args, "--device", "cpu", "--steps", "1", "--warmup", "1", "--repeats", "1",
                     "--reference", REFERENCE, "--json", str(out)]) == 0
    return json.loads(out.read_text())


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
