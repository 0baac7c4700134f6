"""A search's results from its trials' reports: best by mode, steps trained over PBT's runs, status, the table and
the plot."""

from __future__ import annotations

import csv
import io

import numpy as np
from PIL import Image

from gan_dist.tune_results import Report, TrialRecord, best_row, plot, summarize, table_csv, table_markdown


def report(step: int, value: float | None, run: str = "a", started_at: int = 0, exploited: str | None = None):
    return Report(step, step * 64, value, run, f"/runs/{run}/checkpoint_{step:09d}", started_at, exploited)


# Trial a: 4 reports; b: stopped by ASHA at 200; c: exploited a's step-400 checkpoint after its own step 400.
A = TrialRecord("a", {"train.lr_g": 2e-4}, [report(200, 30.0), report(400, 20.0), report(600, 25.0),
                                             report(800, 22.0)])
B = TrialRecord("b", {"train.lr_g": 1e-3}, [report(200, 60.0, "b")])
C = TrialRecord("c", {"train.lr_g": 3.3e-4}, [report(200, 40.0, "c"), report(400, 35.0, "c"),
                                               report(600, 18.0, "c-from-a-400", 400, "a"),
                                               report(800, 17.5, "c-from-a-400", 400, "a")])


def test_a_row_holds_the_best_report_its_steps_and_status():
    row = summarize(A, "min", 800)
    assert (row.best, row.best_step, row.steps, row.trained, row.status) == (20.0, 400, 800, 800, "finished")
    assert row.best_checkpoint == "/runs/a/checkpoint_000000400"
    assert summarize(A, "max", 800).best == 30.0


def test_steps_trained_count_each_run_from_where_it_started():
    """ASHA's savings are in the steps trained: b stopped at 200; c trained 400 of its own, then 400 more from a's
    step-400 state (not 800 from 0)."""
    assert summarize(B, "min", 800).trained == 200
    assert summarize(B, "min", 800).status == "stopped early"
    running = TrialRecord("b", B.config, B.reports, ended=False)  # left running by an interrupted search
    assert summarize(running, "min", 800).status == "unfinished"
    assert summarize(C, "min", 800).trained == 800
    assert summarize(C, "min", 800).best_checkpoint == "/runs/c-from-a-400/checkpoint_000000800"


def test_a_failed_trial_says_why_and_nan_is_never_best():
    failed = TrialRecord("d", {}, [report(200, float("nan"), "d")], error="UserError: training diverged")
    row = summarize(failed, "min", 800)
    assert (row.best, row.status) == (None, "error: UserError: training diverged")
    rows = [summarize(r, "min", 800) for r in (A, B, C, failed)]
    assert best_row(rows, "min").trial == "c"
    assert best_row(rows, "max").trial == "b"
    assert best_row([row], "min") is None


def test_table_has_a_row_per_trial_with_its_values():
    rows = [summarize(r, "min", 800) for r in (A, B, C)]
    table = list(csv.DictReader(io.StringIO(table_csv(rows, ["train.lr_g"], "fid"))))
    assert [(t["trial"], t["train.lr_g"], t["best fid"], t["status"]) for t in table] == [
        ("a", "0.0002", "20", "finished"), ("b", "0.001", "60", "stopped early"), ("c", "0.00033", "17.5", "finished")]
    markdown = table_markdown(rows, ["train.lr_g"], "fid").splitlines()
    assert markdown[0].startswith("| trial | train.lr_g | best fid |") and len(markdown) == 2 + 3


def test_plot_draws_a_line_for_every_trial():
    image = np.asarray(Image.open(io.BytesIO(plot([A, B, C], "fid", "search"))).convert("RGB")).astype(int)
    colours = {"C0": (31, 119, 180), "C1": (255, 127, 14), "C2": (44, 160, 44)}  # matplotlib's first three
    for name, rgb in colours.items():
        assert (np.abs(image - rgb).sum(axis=2) < 30).sum() > 50, f"no line of {name}"
    no_exploit = np.asarray(Image.open(io.BytesIO(plot([A, B], "fid", "search"))).convert("RGB")).astype(int)
    assert (np.abs(no_exploit - colours["C2"]).sum(axis=2) < 30).sum() == 0
