"""Golden numbers: the losses of the first steps of every task's preset on CPU (generation: dcgan-digits, resnet-sn-32,
r3gan-digits; cyclegan-digits, cut-digits, inpaint-digits, pix2pix-digits at tiny widths), pinned in
tests/data/golden_losses.json. A refactor must leave them as they are; a deliberate change to the numerics
rewrites the file in the same commit (GAN_DIST_UPDATE_GOLDEN=1) and says why.

The run goes through `gan-dist train`'s own path (local backend, the embedded digits, the resident reader), so
the pinned numbers cover the data order, the seeds, the initial weights and the step."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from gan_dist.config import load_config
from gan_dist.runtime.launch import train

pytestmark = pytest.mark.slow  # golden-loss runs of every task's preset

GOLDEN = Path(__file__).parent / "data" / "golden_losses.json"
STEPS = 20
# resnet-sn-32 at its full widths takes seconds per step on a CPU; its layers, loss and step are the same narrower.
PRESETS = {
    "dcgan-digits": {},
    "resnet-sn-32": {"model.g_channels": 32, "model.d_channels": 32, "train.batch_size": 16},
    "r3gan-digits": {"train.batch_size": 16},
    **{preset: {"model.g_channels": 8, "model.d_channels": 8, "train.batch_size": 4, "eval.features": "off"}
       for preset in ("cyclegan-digits", "inpaint-digits", "pix2pix-digits")},
    "cut-digits": {"model.g_channels": 8, "model.d_channels": 8, "train.batch_size": 4, "eval.features": "off",
                   "task.num_patches": 32, "task.head_units": 32},
}
# Different CPUs (and thread counts) sum in different orders; the last bits then differ and grow over the steps.
# One thread removes the second cause; the tolerance absorbs the first and still fails any change to the step.
REL_TOL, ABS_TOL = 1e-2, 1e-3


def first_losses(preset: str, storage: Path) -> list[dict[str, float]]:
    overrides = {"train.steps": STEPS, "train.log_every": 1, "train.checkpoint_every": 10**6,
                 "train.sample_every": 10**6, "run.storage": str(storage), "run.name": "golden",
                 "run.backend": "local", **PRESETS[preset]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(preset, overrides))
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (storage / "golden" / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key.startswith("loss_")} for row in rows if "loss_D" in row]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_first_losses_match_the_golden_file(preset, tmp_path):
    losses = first_losses(preset, tmp_path)
    assert len(losses) == STEPS
    if os.environ.get("GAN_DIST_UPDATE_GOLDEN"):
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        golden[preset] = losses
        GOLDEN.write_text("{\n" + ",\n".join(  # one line per step: a changed step shows in the diff
            f' "{name}": [\n  ' + ",\n  ".join(json.dumps(row) for row in rows) + "\n ]"
            for name, rows in golden.items()) + "\n}\n")
    expected = json.loads(GOLDEN.read_text())[preset]
    for step, (got, want) in enumerate(zip(losses, expected), 1):
        assert got.keys() == want.keys(), (preset, step)
        for key in want:
            assert math.isclose(got[key], want[key], rel_tol=REL_TOL, abs_tol=ABS_TOL), (preset, step, key, got, want)
