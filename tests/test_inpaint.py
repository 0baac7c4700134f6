"""Image completion end to end on the CPU: the holes, the fills it is compared with, a completion it must learn,
exact resume, the preview, `gan-dist complete` and `gan-dist evaluate` on its checkpoints, and the refusals."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan_dist import checkpoint
from gan_dist.cli import main
from gan_dist.complete import load_completer
from gan_dist.config import load_config
from gan_dist.data.placement import Dataset
from gan_dist.data.prepare import write_shards
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.eval.completion import complete_u8, harmonic_fill, hole_errors, mean_fill
from gan_dist.masks import MASK_KINDS, center_masks, complete, draw_masks
from gan_dist.runtime.launch import train
from gan_dist.train.tasks import build_task
from helpers import assert_same_state, s3_client, straight_and_resumed, tiny_inpaint_config

CPU = torch.device("cpu")


# ---- the holes and the non-learned fills ------------------------------------------------------------------------

def test_masks_are_drawn_from_the_seed_and_each_kind_has_its_shape():
    def drawn(kinds, seed=0, n=64):
        return draw_masks(kinds, n, 32, torch.Generator().manual_seed(seed))

    assert torch.equal(drawn(MASK_KINDS), drawn(MASK_KINDS)) and not torch.equal(drawn(MASK_KINDS), drawn(MASK_KINDS, 1))
    centre = drawn(("center",))
    assert torch.equal(centre, center_masks(64, 32)) and centre[0, 0, 8:24, 8:24].all() and centre.mean() == 0.25
    boxes, strokes = drawn(("boxes",)), drawn(("strokes",))
    for masks in (boxes, strokes):
        assert set(masks.unique().tolist()) == {0.0, 1.0} and (masks.flatten(1).sum(1) > 0).all()  # a hole each
        assert not torch.equal(masks[0], masks[1])  # each image its own
    box_area = boxes.mean(dim=(1, 2, 3))
    assert box_area.min() >= (4 * 4) / 1024 and box_area.max() <= 3 * 0.25  # sides 1/8 to 1/2, up to 3 boxes
    # the kinds mix per image: some masks are the centre square, others are not
    mixed = drawn(MASK_KINDS)
    is_centre = (mixed == centre[:1]).flatten(1).all(1)
    assert 0 < is_centre.sum() < 64
    with pytest.raises(ValueError):
        draw_masks(("disc",), 1, 32, torch.Generator())


def test_completion_keeps_the_known_pixels_and_hides_the_hole_from_the_net():
    class Echo(torch.nn.Module):  # returns the image channel of its input: what the net sees
        def forward(self, x):
            return x[:, :1]

    images = torch.rand(2, 1, 8, 8) * 2 - 1
    masks = center_masks(2, 8)
    completed, raw = complete(Echo(), images, masks)
    assert torch.equal(completed * (1 - masks), images * (1 - masks))  # known pixels untouched
    assert (completed * masks).abs().max() == 0  # the net saw 0 where the hole is, never the hidden pixels
    assert torch.equal(raw * (1 - masks), images * (1 - masks))


def test_the_harmonic_fill_recovers_a_linear_ramp_and_the_mean_fill_its_mean():
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16).clone()
    masks = center_masks(1, 16)
    filled = harmonic_fill(ramp, masks)
    assert (filled - ramp).abs().max() < 0.02  # a linear image is harmonic: the smooth fill is exact
    known = ramp[masks == 0]
    assert torch.allclose(mean_fill(ramp, masks)[0, 0, 0, 0], known.mean(), atol=1e-6)


def test_hole_errors_count_the_hole_only():
    original = torch.full((2, 8, 8, 1), 100, dtype=torch.uint8)
    completed = original.clone()
    masks = center_masks(2, 8)
    completed[:, 2:6, 2:6] = 100 + 51  # 0.2 off in the hole
    completed[:, 0, 0] = 0  # far off outside it: not counted
    errors = hole_errors(completed, original, masks)
    assert errors["hole_l1"] == pytest.approx(0.2) and errors["hole_psnr"] == pytest.approx(10 * np.log10(25))


# ---- training -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_inpainting_learns_to_fill_holes_from_their_surroundings(tmp_path):
    """Images of one random grey level each: the hole is the level around it. 150 steps must bring the hole error
    below a third of leaving it mid grey (0.245); train seeds 0-2 reach 0.022-0.026."""
    levels = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (300, 16, 16, 1)).copy()
    write_shards(images[:200], None, str(tmp_path / "flat"))
    train(tiny_inpaint_config(str(tmp_path / "flat"), str(tmp_path / "runs"), **{
        "model.g_channels": 8, "model.d_channels": 8, "train.batch_size": 16, "train.steps": 150,
        "train.log_every": 50, "train.checkpoint_every": 150, "train.sample_every": 150, "run.name": "flat"}))
    net = load_completer(str(tmp_path / "runs" / "flat" / "checkpoint_000000150"), CPU).net
    held_out = torch.from_numpy(images[200:])
    masks = center_masks(100, 16)
    learned = hole_errors(complete_u8(net, held_out, masks, CPU), held_out, masks)["hole_l1"]
    grey = hole_errors(complete_u8(None, held_out, masks, CPU, lambda x, m: torch.zeros_like(x)), held_out,
                       masks)["hole_l1"]
    assert learned < grey / 3, (learned, grey)


def test_a_resumed_inpainting_run_matches_an_uninterrupted_one_bit_for_bit(tiny_data, tmp_path):
    """Every tensor of the state, ADA's p (moved at step 4, half an interval observed at 6) and LeCam's means
    included."""
    a, b = straight_and_resumed(lambda **overrides: tiny_inpaint_config(tiny_data, str(tmp_path), **overrides),
                                tmp_path)
    assert_same_state(a, b)
    adversary = a["adversary"]  # not a default: it moved before the resume and between it and the end
    assert adversary["ada"]["p"] > 0 and adversary["ada"]["updates"] == 2 and adversary["lecam"]["seen"] == 6


def test_the_preview_shows_the_holes_the_completion_and_the_original(tiny_data, tmp_path):
    task = build_task(tiny_inpaint_config(tiny_data, str(tmp_path)), {"train": Dataset(tiny_data,
                                                                                      read_manifest(tiny_data))}, CPU)
    grid = task.preview()
    assert grid.shape == (3, 2 + 3 * 18, 2 + 8 * 18)  # 3 rows of 8 16x16 images
    masked, completed, original = (grid[0, 2 + 18 * r:18 + 18 * r, 2:18].int() for r in range(3))
    hole = task.preview_masks[0, 0].bool()
    assert hole.any() and (masked[hole] == 128).all()  # the hole shown mid grey
    assert torch.equal(completed[~hole], original[~hole])  # what was known is kept


# ---- complete and evaluate a checkpoint ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("inpaint-runs")
    train(tiny_inpaint_config(tiny_data, str(storage), **{"eval.features": "auto", "eval.num": 40}))
    return storage / "tiny"


def test_evaluation_during_training_logs_the_hole_error_and_the_labels_kept(trained):
    lines = [json.loads(line) for line in open(trained / "metrics.jsonl")]
    evaluated = [line for line in lines if "hole_l1" in line]
    assert [line["step"] for line in evaluated] == [3, 6]
    for line in evaluated:
        assert 0 < line["hole_l1"] < 1 and line["hole_psnr"] > 0 and 0 <= line["labels"] <= 1
    assert "hole_psnr" in checkpoint.load_meta(str(trained / "checkpoint_000000006"))["metrics"]


def test_the_report_draws_the_labels_kept_beside_the_losses(trained, tmp_path, capsys):
    from gan_dist.report import panel_curves, read_metrics

    panels = {title: curves for title, curves, _ in panel_curves(read_metrics(str(trained)))}
    assert [step for step, _ in panels["evaluation: domain classifier"]["labels"]] == [3, 6]
    assert "loss_D" in panels["losses (penalty_D: D's regularizers)"]
    assert main(["report", str(trained), "--out", str(tmp_path / "curves.png")]) == 0
    assert Image.open(tmp_path / "curves.png").size[0] > 0


def write_inputs(folder) -> None:
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("x")


def test_complete_fills_the_hole_of_each_image_and_keeps_the_rest(trained, tmp_path, capsys):
    write_inputs(tmp_path / "in")
    assert main(["complete", str(trained), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 completed images (center holes)" in captured.out and "skipped 1 of 3" in captured.err
    source = np.asarray(Image.open(tmp_path / "in" / "a.png"), dtype=int)
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"), dtype=int)
    hole = center_masks(1, 16)[0, 0].bool().numpy()
    assert (out[~hole] == source[~hole]).all() and (out[hole] != source[hole]).any()
    net = load_completer(str(trained / "checkpoint_000000006"), CPU).net
    expected = complete_u8(net, torch.from_numpy(source.astype(np.uint8))[None, :, :, None], center_masks(1, 16), CPU)
    assert np.abs(out - expected[0, :, :, 0].numpy()).max() <= 1
    assert (tmp_path / "out" / "sub" / "b.png").exists()

    def completed(mask, seed="0", name="r"):
        assert main(["complete", str(trained), "--input", str(tmp_path / "in"), "--out", str(tmp_path / name),
                     "--mask", mask, "--seed", seed]) == 0
        return np.asarray(Image.open(tmp_path / name / "a.png"), dtype=int)

    first = completed("random")
    assert (completed("random", name="r-again") == first).all() and (completed("random", "1", "r1") != first).any()
    mask_file = np.zeros((32, 32), np.uint8)
    mask_file[:, :8] = 255  # the left quarter, at another size than the images
    Image.fromarray(mask_file).save(tmp_path / "left.png")
    own = completed(str(tmp_path / "left.png"), name="own")
    assert (own[:, 4:] == source[:, 4:]).all() and (own[:, :4] != source[:, :4]).any()


def test_complete_writes_to_object_storage(trained, tmp_path, bucket):
    write_inputs(tmp_path / "in")
    assert main(["complete", str(trained), "--input", str(tmp_path / "in"), "--out", f"s3://{bucket}/done"]) == 0
    keys = sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket=bucket, Prefix="done/")["Contents"])
    assert keys == ["done/.gan-dist-job.json", "done/a.png", "done/sub/b.png"]  # the record a rerun finishes by


@pytest.mark.parametrize("case, message", [
    ("existing", "already holds 2 of the outputs"),
    ("blank-mask", "has no white pixels, so there is no hole to fill"),
    ("no-mask", "is neither center, random nor an existing file"),
    ("generator", "is an image generator's checkpoint, not an inpainting checkpoint; sample images with it"),
])
def test_complete_refuses_in_one_line(case, message, trained, tiny_data, tmp_path, capsys):
    write_inputs(tmp_path / "in")
    ckpt, mask = str(trained), "center"
    if case == "existing":  # written with other holes
        assert main(["complete", ckpt, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--mask",
                     "random"]) == 0
    if case == "blank-mask":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "blank.png")
        mask = str(tmp_path / "blank.png")
    if case == "no-mask":
        mask = str(tmp_path / "missing.png")
    if case == "generator":
        from helpers import tiny_config

        train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3}))
        ckpt = str(tmp_path / "tiny")
    capsys.readouterr()
    assert main(["complete", ckpt, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--mask", mask]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_sample_and_translate_point_an_inpainting_checkpoint_to_complete(trained, tmp_path, capsys):
    assert main(["sample", str(trained), "--out", str(tmp_path / "s")]) == 2
    assert "is an inpainting checkpoint, not an image generator's checkpoint; fill holes with it: gan-dist " \
           "complete" in capsys.readouterr().err
    write_inputs(tmp_path / "in")
    assert main(["translate", str(trained), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "t")]) == 2
    assert "is an inpainting checkpoint, not a translator's checkpoint; fill holes with it: gan-dist complete" \
        in capsys.readouterr().err


def test_evaluate_compares_the_completion_with_non_learned_fills_on_held_out_images(trained, tiny_data, tmp_path,
                                                                                   capsys):
    held_out = tmp_path / "held-out"
    images = np.random.default_rng(1).integers(0, 256, (12, 16, 16, 1), dtype=np.uint8)
    write_shards(images, np.arange(12, dtype=np.int32) % 10, str(held_out), class_names=[str(k) for k in range(10)])
    json_out = tmp_path / "eval.json"
    assert main(["evaluate", str(trained), "--data", str(held_out), "--json", str(json_out)]) == 0
    table = capsys.readouterr().out
    for name in ("hole_l1", "hole_psnr", "labels", "classifier", "harmonic_hole_l1", "harmonic_labels",
                 "mean_hole_psnr", "masked_labels", "original_labels"):
        assert f"\n{name} " in table, table
    result = json.loads(json_out.read_text())
    assert result["num"] == 12 and result["features"] == "completion"
    masks = center_masks(12, 16)
    net = load_completer(str(trained / "checkpoint_000000006"), CPU).net
    expected = hole_errors(complete_u8(net, torch.from_numpy(images), masks, CPU), torch.from_numpy(images), masks)
    assert result["metrics"]["hole_l1"] == pytest.approx(expected["hole_l1"])
    for args, message in ((["--data-a", str(held_out)], "pass the images to complete with --data"),
                          (["--features", "inception"], "--features inception does not apply to completion"),
                          (["--raw"], "holds no image generator (its nets have no average); drop --raw")):
        assert main(["evaluate", str(trained), *args]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("preset, overrides, message", [
    ("inpaint-digits", {"task.masks": "center,disc"}, "task.masks"),
    ("dcgan-digits", {"task.kind": "inpaint"}, "model.arch=dcgan does not fit task.kind=inpaint, which trains model.arch resnet_patchgan"),
    ("inpaint-digits", {"train.n_dis": 2}, "task.kind=inpaint takes one D update per step"),
])
def test_configs_that_cannot_inpaint_are_refused(preset, overrides, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_config(preset, overrides)
