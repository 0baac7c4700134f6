"""The stabilizer ablation on the embedded digits: each row trains `gan-dist train` with a few switches on, the same
steps and seed, then `gan-dist evaluate` scores its 1,000 samples with the domain classifier and, with
--inception, with the standard Inception network. Writes results.jsonl (one line per row and seed, with the
training wall time), table.md and ablation.png into --out.

    python jobs/ablation.py --out /tmp/ablation                   # every row, seed 0 (~25 min on a 2-core CPU)
    python jobs/ablation.py --out /tmp/ablation --rows "cond +R1 (default)" --seeds 0,1,2
    # the Inception FID against a held-out split (~2.5 min more per row on a 2-core CPU):
    gan-dist prepare digits /tmp/digits-train --limit 897 && gan-dist prepare digits /tmp/digits-held --skip 897
    python jobs/ablation.py --out /tmp/bisect --data /tmp/digits-train --held-out /tmp/digits-held --inception
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

DIFFAUGMENT = {"train.augment": "translation,cutout,color"}
R1 = {"train.r1_gamma": "0.1"}
# The DCGAN rows start from dcgan-digits with its stabilizers off and the ablation's budget (~100 s on 2 cores), so
# they do not move when the preset does.
PLAIN = {"model.conditional": "false", "train.r1_gamma": "0", "train.ema": "true", "train.steps": "1500"}
COND = {**PLAIN, "model.conditional": "true"}
DCGAN = "dcgan-digits"
# name -> (preset, --set overrides): each DCGAN row adds one switch to the row named in its comment.
ROWS = {
    "baseline": (DCGAN, {**PLAIN, "train.ema": "false"}),
    "+EMA": (DCGAN, PLAIN),  # baseline
    "+DiffAugment": (DCGAN, {**PLAIN, **DIFFAUGMENT}),  # +EMA
    "+ADA": (DCGAN, {**PLAIN, **DIFFAUGMENT, "train.ada_target": "0.6"}),  # +EMA
    "+R1": (DCGAN, {**PLAIN, **R1}),  # +EMA
    "+R1 gamma=1": (DCGAN, {**PLAIN, "train.r1_gamma": "1"}),  # +EMA
    "+LeCam": (DCGAN, {**PLAIN, "train.lecam_weight": "0.1"}),  # +EMA
    "n_dis=2": (DCGAN, {**PLAIN, "train.n_dis": "2"}),  # +EMA
    "hinge": (DCGAN, {**PLAIN, "train.loss": "hinge"}),  # +EMA
    "conditional": (DCGAN, COND),  # +EMA
    "cond +DiffAugment": (DCGAN, {**COND, **DIFFAUGMENT}),  # conditional
    "cond +LeCam": (DCGAN, {**COND, "train.lecam_weight": "0.1"}),  # conditional
    "cond +R1": (DCGAN, {**COND, **R1}),  # conditional: the default of 2026-11-27 to 12-04
    "r3gan": ("r3gan-digits", {}),  # the preset as shipped: conditional where the data has classes
    "r3gan uncond": ("r3gan-digits", {"model.conditional": "false"}),
}
METRICS = ("fid", "precision", "recall", "copies", "confident", "class_min", "coverage")
INCEPTION = ("fid_inception", "precision_inception", "recall_inception")


def evaluate(run: Path, scores: Path, args: list[str]) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "gan_dist", "evaluate", str(run), "--num", "1000", "--json", str(scores),
                    *args], check=True, stdout=subprocess.DEVNULL)
    return json.loads(scores.read_text())["metrics"]


def run_row(name: str, seed: int, out: Path, steps: int | None, data: str | None, held_out: str | None,
            inception: bool) -> dict:
    preset, overrides = ROWS[name]
    run = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") + f"-seed{seed}"
    args = [sys.executable, "-m", "gan_dist", "train", preset, "--storage", str(out / "runs"), "--name", run,
            "--set", f"train.seed={seed}", "--set", "eval.features=off"]
    if steps:
        args += ["--steps", str(steps)]
    if data:
        args += ["--data", data]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    # the domain features against the training images (their classifier, near-copies of them); Inception's against
    # --held-out
    metrics = evaluate(out / "runs" / run, out / f"{run}.json", ["--metrics", "fid,pr,copies"])
    record = {"row": name, "seed": seed, "train_seconds": round(seconds, 1), **{k: metrics[k] for k in METRICS}}
    if inception:
        scored = evaluate(out / "runs" / run, out / f"{run}-inception.json",
                          ["--metrics", "fid,pr", "--features", "inception", *(["--data", held_out] if held_out else [])])
        record.update({f"{key}_inception": scored[key] for key in ("fid", "precision", "recall")})
    return record


def table(records: list[dict]) -> str:
    """One line per row: the mean over seeds (and the seeds' range where there are several). Training times stay in
    results.jsonl: they compare only between rows run alone on the same machine."""
    columns = [key for key in (*INCEPTION, *METRICS) if all(key in r for r in records)]
    lines = ["| row | seeds | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for name in dict.fromkeys(r["row"] for r in records):
        mine = [r for r in records if r["row"] == name]
        cells = []
        for key in columns:
            values = [r[key] for r in mine]
            mean = sum(values) / len(values)
            spread = f" ({min(values):.3g}-{max(values):.3g})" if len(values) > 1 else ""
            cells.append(f"{mean:.3g}{spread}")
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["row"] for r in records))
    panels = [("fid", "domain FID (lower is better)"), ("confident", "confident share (higher is better)"),
              ("recall", "recall: diversity (higher)"), ("class_min", "rarest class among confident (higher)")]
    if all("fid_inception" in r for r in records):
        panels.insert(0, ("fid_inception", "Inception FID (lower is better)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2))
    for axis, (key, title) in zip(axes, panels):
        for i, name in enumerate(names):
            values = [r[key] for r in records if r["row"] == name]
            axis.bar(i, sum(values) / len(values), color="tab:blue", alpha=0.8)
            axis.scatter([i] * len(values), values, color="black", s=10, zorder=3)
        axis.set_xticks(range(len(names)), names, rotation=40, ha="right")
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, help="override every row's preset steps")
    parser.add_argument("--data", help="a prepared dataset instead of the embedded digits")
    parser.add_argument("--held-out", help="real images the runs never saw, for the Inception FID (default: the "
                                           "training data)")
    parser.add_argument("--inception", action="store_true", help="also the standard Inception FID, precision, recall")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    for name in args.rows.split(","):
        for seed in map(int, args.seeds.split(",")):
            record = run_row(name, seed, args.out, args.steps, args.data, args.held_out, args.inception)
            with results.open("a") as file:
                file.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    (args.out / "table.md").write_text(table(records) + "\n")
    plot(records, args.out / "ablation.png")
    print(table(records))


if __name__ == "__main__":
    main()
