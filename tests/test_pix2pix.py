"""pix2pix, paired image-to-image translation: the paired dataset format (prepare from two folders, the embedded
digit-edges pairs, every reader delivering the input column), the U-Net and its skip connections, the loss, the
task's resume and a mapping a tiny model learns in seconds."""

import copy
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan_dist import seeds
from gan_dist.config import load_config
from gan_dist.data.embedded import cache_dir
from gan_dist.data.images import ImageSpec
from gan_dist.data.placement import Dataset, dataset_uri
from gan_dist.data.prepare import PrepareOptions, prepare, write_shards
from gan_dist.data.reader import DataPosition, load_columns, read_manifest, resident_reader
from gan_dist.data.shards import PAIRED_SCHEMA
from gan_dist.data.sources import outline
from gan_dist.data.stream import StreamReader
from gan_dist.errors import UserError
from gan_dist.evaluate import evaluate
from gan_dist.models.unet import UNetGenerator, unet_depth
from gan_dist.runtime.launch import train
from gan_dist.train.tasks import build_task
from helpers import assert_same_state, numbered_images, run, straight_and_resumed

OPTIONS = PrepareOptions(ImageSpec(16, None), shuffle_seed=None)


def _pair_folders(root, names=("a", "b", "c", "d"), input_size=(20, 20)):
    """targets/<name>.png (RGB, colour by index) and inputs/<name>.jpg (gray): a pair per name."""
    for folder in ("targets", "inputs"):
        (root / folder).mkdir()
    for index, name in enumerate(names):
        Image.new("RGB", (20, 20), (10 * index, 100, 200)).save(root / "targets" / f"{name}.png")
        Image.new("L", input_size, 40 * index).save(root / "inputs" / f"{name}.jpg")
    return str(root / "inputs"), str(root / "targets")


def test_two_folders_prepare_as_pairs_by_name_and_every_reader_delivers_the_input(tmp_path):
    inputs, targets = _pair_folders(tmp_path)
    manifest, _ = prepare(targets, str(tmp_path / "out"), OPTIONS, progress=False, inputs=inputs)
    assert (manifest.channels, manifest.input_channels, manifest.count) == (3, 1, 4)
    assert pq.read_schema(tmp_path / "out" / manifest.shards[0]).equals(PAIRED_SCHEMA)
    columns = load_columns(str(tmp_path / "out"), read_manifest(str(tmp_path / "out")))
    # the file order is kept (no shuffle): input i is gray 40*i, target i has red 10*i
    assert columns["input"].shape == (4, 16, 16, 1) and columns["image"].shape == (4, 16, 16, 3)
    assert np.abs(columns["input"][:, 8, 8, 0].astype(int) - [0, 40, 80, 120]).max() <= 2  # JPEG's rounding
    assert columns["image"][:, 8, 8, 0].tolist() == [0, 10, 20, 30]
    resident = resident_reader(str(tmp_path / "out"), manifest, 2, 0, 1, 0, False, "cpu")
    streamed = StreamReader(str(tmp_path / "out"), manifest, 2, 0, 1, 0, False, workers=0)
    for reader in (resident, streamed):
        batch, _ = next(reader.batches(DataPosition()))
        assert sorted(batch) == ["image", "input", "label"]
        assert torch.equal(batch["input"], torch.from_numpy(columns["input"][:2]))
        assert torch.equal(batch["image"], torch.from_numpy(columns["image"][:2]))


def test_the_ray_data_decode_delivers_the_input_too(tmp_path):
    """The Ray backend's streamed path decodes in Ray Data tasks through the same decode function (no cluster
    needed to check what it hands over)."""
    from gan_dist.data.ray_stream import _BatchCollate, decode_block

    inputs, targets = _pair_folders(tmp_path)
    manifest, _ = prepare(targets, str(tmp_path / "out"), OPTIONS, progress=False, inputs=inputs)
    batch = _BatchCollate()(decode_block(pq.read_table(tmp_path / "out" / manifest.shards[0]), manifest))
    columns = load_columns(str(tmp_path / "out"), manifest)
    assert sorted(batch) == ["image", "input", "label"]
    assert all(torch.equal(batch[name], torch.from_numpy(columns[name])) for name in batch)


def test_a_configured_dataset_may_name_a_built_in_one():
    assert dataset_uri("train", "embedded:digit-edges") == str(cache_dir() / "digit-edges-32")
    assert read_manifest(dataset_uri("train", "embedded:digit-edges")).paired
    assert not read_manifest(dataset_uri("train", None)).paired  # the default stays the digits
    with pytest.raises(UserError, match="no built-in dataset 'edges'; the built-in ones are digits, typeset-digits, "
                                        "digit-edges"):
        dataset_uri("train", "embedded:edges")


def test_pairs_in_png_keep_their_columns_apart(tmp_path):
    inputs, targets = _pair_folders(tmp_path)
    options = PrepareOptions(ImageSpec(16, None), fmt="png", shuffle_seed=None)
    manifest, _ = prepare(targets, str(tmp_path / "out"), options, progress=False, inputs=inputs)
    raw, _ = prepare(targets, str(tmp_path / "raw"), OPTIONS, progress=False, inputs=inputs)
    png_columns, raw_columns = load_columns(str(tmp_path / "out"), manifest), load_columns(str(tmp_path / "raw"), raw)
    for name in ("image", "input", "label"):
        assert np.array_equal(png_columns[name], raw_columns[name])


@pytest.mark.parametrize("change, expected", [
    (lambda root: (root / "inputs" / "b.jpg").unlink(), "1 only in SOURCE"),
    (lambda root: Image.new("L", (20, 20)).save(root / "inputs" / "zz.png"), "1 only in --inputs"),
    (lambda root: Image.new("L", (20, 12)).save(root / "inputs" / "c.jpg"), "1 input/target pairs differ in size "
                                                                              "(e.g. c.png 20x20 vs 20x12)"),
    (lambda root: Image.new("L", (20, 20)).save(root / "inputs" / "c.png"), "would both pair with 'c'"),
])
def test_a_wrong_pairing_is_one_line_naming_the_first_few(tmp_path, change, expected):
    inputs, targets = _pair_folders(tmp_path)
    change(tmp_path)
    with pytest.raises(UserError, match="^.*$") as error:
        prepare(targets, str(tmp_path / "out"), OPTIONS, progress=False, inputs=inputs)
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_unpaired_names_list_only_the_first_few(tmp_path):
    inputs, targets = _pair_folders(tmp_path, names=tuple("abcdefgh"))
    for name in "bcdefg":
        (tmp_path / "inputs" / f"{name}.jpg").unlink()
    with pytest.raises(UserError) as error:
        prepare(targets, str(tmp_path / "out"), OPTIONS, progress=False, inputs=inputs)
    assert "6 only in SOURCE" in str(error.value) and "(e.g. b, c, d)" in str(error.value)


@pytest.mark.slow
def test_the_command_prepares_pairs_and_refuses_a_wrong_pairing_in_one_line(tmp_path):
    inputs, targets = _pair_folders(tmp_path)
    done = run("prepare", targets, str(tmp_path / "out"), "--inputs", inputs, "--resolution", "16")
    assert done.returncode == 0, done.stderr
    assert read_manifest(str(tmp_path / "out")).input_channels == 1
    os.remove(tmp_path / "inputs" / "a.jpg")
    done = run("prepare", targets, str(tmp_path / "again"), "--inputs", inputs, "--resolution", "16")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "only in SOURCE" in done.stderr and "Traceback" not in done.stderr


def test_digit_edges_pair_each_digit_with_its_outline(tmp_path):
    manifest, _ = prepare("digit-edges", str(tmp_path / "edges"), PrepareOptions(ImageSpec(32, None)),
                          progress=False)
    digits, _ = prepare("digits", str(tmp_path / "digits"), PrepareOptions(ImageSpec(32, None)), progress=False)
    edges = load_columns(str(tmp_path / "edges"), manifest)
    assert (manifest.count, manifest.channels, manifest.input_channels) == (1797, 1, 1)
    assert manifest.class_names == [str(d) for d in range(10)]
    # the targets are the digits as `prepare digits` writes them, in the same order; the inputs their outlines
    assert np.array_equal(edges["image"], load_columns(str(tmp_path / "digits"), digits)["image"])
    assert all(np.array_equal(outline(image), edge) for image, edge in zip(edges["image"][:50], edges["input"][:50]))
    assert 0 < (edges["input"] > 0).mean() < (edges["image"] > 0).mean() * 1.5


def test_outline_is_the_morphological_gradient():
    square = np.zeros((6, 6, 1), np.uint8)
    square[2:4, 2:4] = 200
    expected = np.zeros((6, 6), np.uint8)
    expected[1:5, 1:5] = 200  # dilation (1:5) minus erosion (empty: no 3x3 window is all inside a 2x2 square)
    assert np.array_equal(outline(square)[..., 0], expected)


# ---- the U-Net --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [16, 32, 64])
def test_the_unet_goes_down_to_one_pixel_and_back(side):
    depth = unet_depth(side)
    net = UNetGenerator(1, 3, channels=4, depth=depth)
    sizes = []
    x = torch.randn(2, 1, side, side)
    for stage in net.down:
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == [side >> (i + 1) for i in range(depth)] and sizes[-1] == 1
    assert net(torch.randn(2, 1, side, side)).shape == (2, 3, side, side)
    assert [net.down[i][-2 if 0 < i < depth - 1 else -1].out_channels for i in range(depth)] == \
        [4 * min(2**i, 8) for i in range(depth)]


def test_the_reference_unet_256_depth_and_size():
    assert unet_depth(256) == 8 and unet_depth(128) == 7
    net = UNetGenerator(3, 3, 64, 8)
    assert sum(p.numel() for p in net.parameters()) == 54_409_603
    dropouts = [i for i, stage in enumerate(net.up) if any(isinstance(m, torch.nn.Dropout) for m in stage)]
    assert dropouts == [4, 5, 6]  # the three decoder stages right above the innermost, as unet_256's


def test_skip_connections_hand_each_encoder_stage_to_its_decoder_stage():
    """Decoder stage i takes encoder stage i's output beside the stage below's; so with the bottleneck's path cut
    (its transposed conv zeroed) the output still follows the input."""
    torch.manual_seed(0)
    net = UNetGenerator(1, 1, channels=4, depth=4, dropout=0.0).eval()
    encoded, decoded = {}, {}
    for i in range(4):
        net.down[i].register_forward_hook(lambda module, args, out, i=i: encoded.__setitem__(i, out))
        net.up[i].register_forward_pre_hook(lambda module, args, i=i: decoded.__setitem__(i, args[0]))
    net(torch.randn(2, 1, 16, 16))
    assert torch.equal(decoded[3], encoded[3])  # the innermost: no skip
    for i in range(3):
        assert decoded[i].shape[1] == 2 * encoded[i].shape[1]
        assert torch.equal(decoded[i][:, :encoded[i].shape[1]], encoded[i])
    with torch.no_grad():
        for p in net.up[-1].parameters():
            p.zero_()
        x = torch.randn(2, 1, 16, 16)
        assert (net(x) - net(-x)).abs().mean() > 0.01


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    net = UNetGenerator(1, 1, channels=4, depth=5)
    x = torch.randn(2, 1, 32, 32)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


# ---- the task -----------------------------------------------------------------------------------------------------

CPU = torch.device("cpu")


def tiny_pix2pix_config(data: str, storage: str, **overrides):
    """The pix2pix preset at the smallest widths: a step takes milliseconds on CPU."""
    return load_config("pix2pix-digits", {
        "data.path": data, "run.storage": storage, "run.name": "tiny", "model.g_channels": 4, "model.d_channels": 4,
        "model.d_layers": 1, "train.batch_size": 4, "train.steps": 6, "train.log_every": 2,
        "train.checkpoint_every": 3, "train.sample_every": 3, "eval.features": "off", **overrides})


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory) -> str:
    """64 pairs 16x16: numbered gray inputs, their inversions as targets, labeled row % 10."""
    out = tmp_path_factory.mktemp("pairs") / "shards"
    inputs = numbered_images(64)
    write_shards(255 - inputs, np.arange(64) % 10, str(out), shard_size=16, inputs=inputs,
                 class_names=[str(k) for k in range(10)])
    return str(out)


def test_the_step_losses_are_the_papers_objective_computed_by_hand(tiny_pairs, tmp_path):
    """loss_D = BCE(D(x, y), 1) + BCE(D(x, G(x)), 0) with D before its update; loss_G = BCE(D(x, G(x)), 1) with D
    after it + 100 |G(x) - y|; G(x) with the step's seeded dropout."""
    cfg = tiny_pix2pix_config(tiny_pairs, str(tmp_path))
    data = {"train": Dataset(tiny_pairs, read_manifest(tiny_pairs))}
    task = build_task(cfg, data, CPU)
    batch = {name: torch.from_numpy(column[:4]) for name, column in load_columns(tiny_pairs, data["train"].manifest)
             .items()}
    G0, D0 = copy.deepcopy(task.G), copy.deepcopy(task.D)
    out = task.train_step({"train": batch}, step=7)
    x, y = (batch[name].permute(0, 3, 1, 2).float() / 127.5 - 1 for name in ("input", "image"))
    with torch.random.fork_rng():
        torch.manual_seed(seeds.derive(cfg.train.seed, "dropout", 0, 7))
        fake = G0.train()(x)
    with torch.no_grad():
        loss_d = (F.softplus(-D0(torch.cat([x, y], 1))).mean() + F.softplus(D0(torch.cat([x, fake], 1))).mean())
        l1 = (fake - y).abs().mean()
        loss_g = F.softplus(-task.D(torch.cat([x, fake], 1))).mean() + 100 * l1
    for name, expected in (("loss_D", loss_d), ("loss_l1", l1), ("loss_G", loss_g)):
        assert torch.allclose(out[name], expected, rtol=1e-5, atol=1e-6), (name, out[name], expected)
    assert not torch.equal(task.D.patch.model[0].weight, D0.patch.model[0].weight)  # both nets were updated
    assert not torch.equal(task.G.down[0][0].weight, G0.down[0][0].weight)


def test_pix2pix_refuses_single_images_and_other_families_in_one_line(tiny_data, tmp_path):
    with pytest.raises(UserError, match="reads pairs and .* holds single images; prepare a paired dataset"):
        train(tiny_pix2pix_config(tiny_data, str(tmp_path)))
    with pytest.raises(UserError, match="model.arch=resnet_patchgan does not fit task.kind=pix2pix"):
        load_config("pix2pix-digits", {"model": {"arch": "resnet_patchgan"}})
    with pytest.raises(UserError, match="U-Net's 5 stages need image sides divisible by 32, and these are 16"):
        train(tiny_pix2pix_config(tiny_pairs_16(tmp_path), str(tmp_path), **{"model.depth": 5}))


def tiny_pairs_16(tmp_path) -> str:
    out = str(tmp_path / "pairs16")
    write_shards(numbered_images(8), None, out, inputs=numbered_images(8))
    return out


def test_a_resumed_pix2pix_run_matches_an_uninterrupted_one_bit_for_bit(tiny_pairs, tmp_path):
    """6 steps straight against a run started from the straight run's step-3 checkpoint: every tensor of the state
    (both nets, both optimizers and their decayed rates, ADA's p, LeCam's means, the RNG states), the dropout of
    steps 4-6 included."""
    a, b = straight_and_resumed(lambda **overrides: tiny_pix2pix_config(tiny_pairs, str(tmp_path), **overrides),
                                tmp_path)
    assert_same_state(a, b)


@pytest.mark.slow
def test_pix2pix_learns_a_known_mapping_and_translate_and_evaluate_use_it(tmp_path):
    """The targets are the inputs inverted (255 - x), digits 16x16. After 150 steps (G's rate raised to 1e-3: at the
    reference's 2e-4 the U-Net needs ~300 steps) the translations of held-out digits, made by `gan-dist translate`
    from PNG files, must be within half the error of the best trivial translator (the mean target image; passing
    the input through is far worse), and `gan-dist evaluate` on held-out pairs must say so beside both
    baselines."""
    digits = digits_16()
    write_shards(255 - digits[:400], None, str(tmp_path / "train"), inputs=digits[:400])
    write_shards(255 - digits[400:500], None, str(tmp_path / "held"), inputs=digits[400:500])
    train(tiny_pix2pix_config(str(tmp_path / "train"), str(tmp_path / "runs"), **{
        "model.g_channels": 8, "model.d_channels": 8, "train.batch_size": 16, "train.steps": 150, "train.lr_g": 1e-3,
        "train.log_every": 50, "train.checkpoint_every": 150, "train.sample_every": 150, "run.name": "inverse"}))
    run_dir = str(tmp_path / "runs" / "inverse")
    (tmp_path / "in").mkdir()
    for index, digit in enumerate(digits[400:500]):
        Image.fromarray(digit[..., 0]).save(tmp_path / "in" / f"{index:03d}.png")
    done = run("translate", run_dir, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    translated = np.stack([np.asarray(Image.open(tmp_path / "out" / f"{i:03d}.png")) for i in range(100)])
    target = 255.0 - digits[400:500, ..., 0]
    learned = np.abs(translated - target).mean() / 255
    mean_target = np.abs(target - (255.0 - digits[:400, ..., 0]).mean(0)).mean() / 255
    assert learned < mean_target / 2, (learned, mean_target)

    result = evaluate(run_dir, data_uri=str(tmp_path / "held"), num=100, features="off")
    m = result.metrics
    assert set(m) == {"l1", "psnr", "input_l1", "input_psnr", "mean_l1", "mean_psnr"}
    assert abs(m["l1"] - learned) < 0.01  # the same net on the same pairs (PNG round trip aside)
    assert m["l1"] < m["mean_l1"] / 2 and m["mean_l1"] < m["input_l1"] and m["psnr"] > m["mean_psnr"]


def digits_16() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = (load_digits().images * (255 / 16)).round().astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(x).resize((16, 16), Image.BILINEAR)) for x in images])[..., None]
