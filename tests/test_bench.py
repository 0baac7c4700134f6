"""The data benchmark runs end to end (its numbers are for the note, not asserted)."""

from gan_dist.data.bench import main


def test_data_benchmark_reports_every_format_and_size(tmp_path, capsys):
    main(["--count", "64", "--root", str(tmp_path)])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[2], r[3]) for r in rows] == [("raw", "32"), ("raw", "64"), ("png", "32"), ("png", "64")]
    assert all(float(r[4].replace(",", "")) > 0 for r in rows)
