"""What a person watches: W&B (offline, read back from its own files), the curves PNG, the console."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gan_dist.progress import Progress
from gan_dist.report import draw_curves, panel_curves, read_metrics
from gan_dist.runtime.launch import train
from gan_dist.tracking import RunTracker
from helpers import run, s3_client, tiny_config
from wandb_records import history, run_id


@pytest.fixture
def wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_offline_run_carries_metrics_and_grids_and_a_resume_continues_it(tiny_data, tmp_path, wandb_offline):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 4, "train.log_every": 2,
                                                   "train.sample_every": 2, "train.checkpoint_every": 2})
    train(cfg)
    cfg.train.steps, cfg.run.resume = 6, True
    train(cfg)

    runs = sorted((tmp_path / "tiny" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    files = [next(r.glob("run-*.wandb")) for r in runs]
    assert run_id(files[0]) == run_id(files[1])  # the resumed run continues the same W&B run

    rows = history(files[0])
    logged = [r for r in rows if "loss_D" in r]
    assert [r["_step"] for r in logged] == [2, 4]
    for key in ("loss_G", "D_real", "D_fake", "grad_norm_D", "grad_norm_G", "lr_G", "lr_D", "img_per_s",
                "images_seen", "epoch"):
        assert key in logged[-1], key
    grids = [r for r in rows if r.get("samples/_type") == "image-file"]
    assert [r["_step"] for r in grids] == [2, 4]
    for row in grids:  # the history points at the PNG W&B keeps beside it: the 8x8 grid of 16 px samples
        assert Image.open(runs[0] / "files" / row["samples/path"]).size == (8 * 18 + 2, 8 * 18 + 2)
    assert [r["_step"] for r in history(files[1]) if "loss_D" in r] == [6]


@pytest.mark.slow
def test_unreachable_wandb_warns_once_and_training_goes_on(tiny_data, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "10")
    cfg = tiny_config(tiny_data, str(tmp_path))
    assert train(cfg).step == 6
    out = capfd.readouterr().out
    assert out.count("warning: W&B is off for the rest of this run") == 1


CYCLE = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]  # matplotlib's first line colours, as RGB


def test_curves_png_shows_the_run(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 12, "train.log_every": 1})
    train(cfg)
    run_dir = str(tmp_path / "tiny")
    logged = [list(curves) for _, curves, _ in panel_curves(read_metrics(run_dir))]
    assert logged == [["loss_D", "loss_G"], ["D_real", "D_fake"], ["grad_norm_D", "grad_norm_G"], ["img_per_s"], [],
                      []]  # no evaluation in this run
    image = np.asarray(Image.open(draw_curves(run_dir)).convert("RGB"), dtype=int)
    # Six panels, 3 rows x 2 columns: each draws one line per key the run logged for it, in matplotlib's colour cycle
    # (hundreds of pixels of each over 12 steps, beyond its legend's sample), and none where it logged nothing.
    height, width = image.shape[0] // 3, image.shape[1] // 2
    panels = [image[row * height:(row + 1) * height, col * width:(col + 1) * width]
              for row in range(3) for col in range(2)]
    drawn = [[color for color in CYCLE if (np.abs(panel - color).sum(axis=-1) < 30).sum() > 150] for panel in panels]
    assert drawn == [CYCLE[:len(keys)] for keys in logged]


def test_console_prints_compact_lines_off_a_terminal(tmp_path):
    stream = io.StringIO()
    log = tiny_config("unused", "unused", **{"log.console_every_s": 3600}).log
    tracker = RunTracker(str(tmp_path), 100, log, "id", {}, console=stream)
    tracker.progress(9)
    tracker.message("resumed from step 8")
    for step in (10, 20, 100):
        tracker.progress(step)
        tracker.log({"step": step, "loss_D": 1.0, "loss_G": 2.0, "img_per_s": 5.0, "grad_norm_D": 3.0})
    lines = stream.getvalue().splitlines()
    # the first progress line waits for the interval; the last step always prints, with its losses
    assert lines[0] == "resumed from step 8" and len(lines) == 2, lines
    assert lines[1].startswith("step: 100/100 (100%) ") and "ETA" not in lines[1]
    assert lines[1].endswith("/s | loss_D 1 | loss_G 2 | img_per_s 5")


def test_progress_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = Progress(10, stream, "embed", done=2)
    bar.update(5)  # within the redraw interval of the start: not drawn
    bar.last -= 1
    bar.update(6, note=" | x 1")
    bar.message("a warning")
    bar.update(10, final=True)
    text = stream.getvalue()
    assert text.startswith("\r\033[Kembed: 6/10 (60%) ") and " ETA " in text.split("\n")[0]
    assert text.split("\n")[0].endswith("s | x 1\r\033[Ka warning")
    assert text.split("\n")[1].startswith("\r\033[Kembed: 10/10 (100%) ") and text.endswith("/s\n")
@pytest.mark.slow
def test_a_torn_last_line_loses_no_record_after_the_resume(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 4, "train.log_every": 1,
                                                   "train.checkpoint_every": 2, "train.sample_every": 4})
    train(cfg)
    # Killed while writing step 4's record, before its checkpoint: half a line, no newline, resume from step 2.
    run_dir, metrics = tmp_path / "tiny", tmp_path / "tiny" / "metrics.jsonl"
    text = metrics.read_bytes()
    metrics.write_bytes(text[:text.rindex(b"{") + 30])
    shutil.rmtree(run_dir / "checkpoint_000000004")
    cfg.train.steps, cfg.run.resume = 6, True
    train(cfg)

    lines = metrics.read_text().splitlines()
    assert lines[3] == text[text.rindex(b"{"):][:30].decode()  # the fragment, kept, on a line of its own
    records = [json.loads(line) for line in lines[:3] + lines[4:]]
    assert [r["step"] for r in records] == [1, 2, 3, 3, 4, 5, 6]  # the resumed attempt's first record is there
    # The report draws each step once, from the record written last.
    assert read_metrics(str(run_dir)).rows == records[:2] + records[3:]
    done = run("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert "1 unreadable line skipped" in done.stderr and "Traceback" not in done.stderr
    assert Image.open(run_dir / "curves.png").size == (1100, 1050)


@pytest.mark.slow
def test_a_torn_last_line_in_the_bucket_loses_no_record_either(bucket):
    run_uri = f"s3://{bucket}/runs/torn"
    s3_client().put_object(Bucket=bucket, Key="runs/torn/metrics.jsonl", Body=b'{"step": 1, "loss_D": 1.0}\n{"step": 2, "lo')
    tracker = RunTracker(run_uri, 3, tiny_config("unused", "unused").log, "id", {})
    tracker.log({"step": 3, "loss_D": 0.5})
    tracker.close()
    body = s3_client().get_object(Bucket=bucket, Key="runs/torn/metrics.jsonl")["Body"].read()
    assert body == b'{"step": 1, "loss_D": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss_D": 0.5}\n'
    done = run("report", run_uri)
    assert done.returncode == 0, done.stderr
    assert "1 unreadable line skipped" in done.stderr and "Traceback" not in done.stderr
    assert s3_client().head_object(Bucket=bucket, Key="runs/torn/curves.png")["ContentLength"] > 0
