"""`gan-dist explore`: what the pictures hold (slerp paths, truncation, classes), their sizes and frames, the same
bytes for the same seed, s3:// outputs, W&B offline records, and the one-line refusals."""

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gan_dist import checkpoint
from gan_dist.cli import main
from gan_dist.explore import CLASS_LATENTS, PATH_ENDS, latent, slerp
from gan_dist.imaging import to_uint8
from gan_dist.runtime.launch import train
from gan_dist.sample import load_generator
from helpers import s3_client, tiny_config, tiny_translation_config
from wandb_records import history, records

RES, PAD = 16, 2  # tiny_data's 16 px images; the grid helper's 2 px padding
SMALL = ["--rows", 3, "--frames", 5, "--per-class", 4, "--truncation", "1,0.5,0"]


@pytest.fixture(scope="module")
def conditional_run(tiny_data, tmp_path_factory) -> str:
    storage = tmp_path_factory.mktemp("explore-runs")
    train(tiny_config(tiny_data, str(storage), **{"model.conditional": True, "log.wandb_project": "explore-test"}))
    return str(storage / "tiny")


@pytest.fixture(scope="module")
def unconditional_run(tiny_data, tmp_path_factory) -> str:
    storage = tmp_path_factory.mktemp("explore-runs-u")
    train(tiny_config(tiny_data, str(storage)))
    return str(storage / "tiny")


def explore(capsys, *args) -> tuple[int, str]:
    code = main(["explore", *map(str, args)])
    return code, capsys.readouterr().err


def size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) of a grid of 16 px tiles."""
    return columns * (RES + PAD) + PAD, rows * (RES + PAD) + PAD


def tile(picture: np.ndarray, row: int, column: int) -> np.ndarray:
    top, left = PAD + row * (RES + PAD), PAD + column * (RES + PAD)
    return picture[top:top + RES, left:left + RES]


def png(path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "L"  # a grayscale generator: one channel, not make_grid's three
    return np.asarray(image)


def gif_frames(path) -> list[np.ndarray]:
    gif = Image.open(path)
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(np.asarray(gif.convert("L")))
    return frames


@torch.no_grad()
def direct(run: str, z: torch.Tensor, label: int | None) -> np.ndarray:
    """The image G makes of one latent, without explore's code."""
    G = load_generator(checkpoint.latest_complete(run), torch.device("cpu")).net
    labels = None if label is None else torch.tensor([label])
    return to_uint8(G(z[None], labels))[0, 0].numpy()


def wait_until_finished(path, seconds: float = 60.0) -> None:
    """W&B's service process writes an offline run's last block a moment after finish() returns (a CLI process
    waits for it at exit; a test reads the file in the same process)."""
    deadline = time.monotonic() + seconds
    while not any(r.WhichOneof("record_type") == "exit" for r in records(path)) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_conditional_exploration_has_paths_truncation_and_classes(conditional_run, tmp_path, capsys):
    assert explore(capsys, conditional_run, "--out", tmp_path, *SMALL) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classes.gif", "classes.png", "interpolations.gif", "interpolations.png", "truncation.gif", "truncation.png"]
    assert Image.open(tmp_path / "interpolations.png").size == size(3, 5)  # 3 paths of 5 frames
    assert Image.open(tmp_path / "truncation.png").size == size(3, 3)  # the same 3 latents at 3 psi
    assert Image.open(tmp_path / "classes.png").size == size(10, 4)  # tiny_data's 10 classes, 4 latents
    for name, frames, frame_size in (("interpolations", 2 * 5 - 2, size(1, 3)),  # forth and back, ends once
                                     ("truncation", 3, size(1, 3)), ("classes", 4, size(2, 5))):
        gif = Image.open(tmp_path / f"{name}.gif")
        assert (gif.n_frames, gif.size, gif.info["loop"]) == (frames, frame_size, 0), name


def test_gif_frames_are_the_grids_columns_forth_and_back(conditional_run, tmp_path, capsys):
    assert explore(capsys, conditional_run, "--out", tmp_path, *SMALL)[0] == 0
    grid, frames = png(tmp_path / "interpolations.png"), gif_frames(tmp_path / "interpolations.gif")
    for index, column in enumerate([0, 1, 2, 3, 4, 3, 2, 1]):
        for row in range(3):  # a frame holds the rows side by side
            assert np.array_equal(tile(frames[index], 0, row), tile(grid, row, column)), (index, row)
    classes, frames = png(tmp_path / "classes.png"), gif_frames(tmp_path / "classes.gif")
    for column in range(4):
        for k in range(10):  # 5 classes a row, 2 rows
            assert np.array_equal(tile(frames[column], k // 5, k % 5), tile(classes, k, column)), (column, k)


def test_paths_run_from_one_seeded_latent_to_the_next_in_the_rows_class(conditional_run, tmp_path, capsys):
    assert explore(capsys, conditional_run, "--out", tmp_path, *SMALL, "--seed", 7)[0] == 0
    grid, truncation = png(tmp_path / "interpolations.png"), png(tmp_path / "truncation.png")
    for row in range(3):
        start, end = latent(7, PATH_ENDS, 2 * row, 8), latent(7, PATH_ENDS, 2 * row + 1, 8)
        assert np.array_equal(tile(grid, row, 0), direct(conditional_run, start, row))  # row r: class r % 10
        assert np.array_equal(tile(grid, row, 4), direct(conditional_run, end, row))
        assert np.array_equal(tile(truncation, row, 0), tile(grid, row, 0))  # psi 1: the paths' starts
    assert not np.array_equal(tile(grid, 0, 2), tile(grid, 0, 0))  # the middle is neither end
    classes = png(tmp_path / "classes.png")
    assert np.array_equal(tile(classes, 6, 3), direct(conditional_run, latent(7, CLASS_LATENTS, 3, 8), 6))


def test_slerp_keeps_to_the_sphere_between_its_exact_ends():
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    path = slerp(a, b, 5)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0))  # a straight line's middle has norm 2.12
    assert torch.allclose(path[2], torch.tensor([1.0, 1.0, 0.0]) * 3 / 2**0.5)
    assert torch.allclose(slerp(a, 2 * a, 3)[1], 1.5 * a)  # parallel ends: the line


def test_an_unconditional_exploration_has_no_classes_and_psi_0_is_one_image(unconditional_run, tmp_path, capsys):
    assert explore(capsys, unconditional_run, "--out", tmp_path, *SMALL) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "interpolations.gif", "interpolations.png", "truncation.gif", "truncation.png"]
    truncation = png(tmp_path / "truncation.png")
    assert all(np.array_equal(tile(truncation, row, 2), tile(truncation, 0, 2)) for row in (1, 2))  # the mean z
    assert not np.array_equal(tile(truncation, 1, 0), tile(truncation, 0, 0))  # psi 1: each row its own latent


def test_the_same_seed_gives_the_same_bytes(unconditional_run, tmp_path, capsys):
    for out, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert explore(capsys, unconditional_run, "--out", tmp_path / out, *SMALL, "--seed", seed)[0] == 0
    for name in ("interpolations.png", "interpolations.gif", "truncation.png", "truncation.gif"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name


def test_raw_explores_the_trained_generator_not_its_average(unconditional_run, tmp_path, capsys):
    for out, flags in (("ema", []), ("raw", ["--raw"])):
        assert explore(capsys, unconditional_run, "--out", tmp_path / out, *SMALL, *flags)[0] == 0
    assert (tmp_path / "ema" / "truncation.png").read_bytes() != (tmp_path / "raw" / "truncation.png").read_bytes()


def test_an_s3_out_gets_the_same_pictures(conditional_run, bucket, tmp_path, capsys):
    assert explore(capsys, conditional_run, "--out", f"s3://{bucket}/explore", *SMALL)[0] == 0
    assert explore(capsys, conditional_run, "--out", tmp_path, *SMALL)[0] == 0
    s3 = s3_client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"explore/{p.name}" for p in tmp_path.iterdir())
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (tmp_path / key.split("/")[1]).read_bytes()
    code, err = explore(capsys, conditional_run, "--out", f"s3://{bucket}/explore", *SMALL)
    assert code == 2 and "already holds an exploration" in err


def test_wandb_offline_holds_the_pictures_in_the_checkpoints_project(conditional_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    assert explore(capsys, conditional_run, "--out", tmp_path, *SMALL, "--wandb", "offline")[0] == 0
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    path = next(run_dir.glob("run-*.wandb"))
    wait_until_finished(path)
    run = next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
    assert (run.display_name, run.job_type, run.project) == ("explore-tiny", "explore", "explore-test")
    (row,) = history(path)  # one step: the pictures
    for name in ("interpolations", "truncation", "classes"):
        assert row[f"explore/{name}/_type"] == "image-file", name
        assert row[f"explore/{name}_animation/_type"] == "video-file", name
        logged_png = run_dir / "files" / row[f"explore/{name}/path"]
        assert np.array_equal(np.asarray(Image.open(logged_png)), png(tmp_path / f"{name}.png")), name
        logged_gif = run_dir / "files" / row[f"explore/{name}_animation/path"]
        assert logged_gif.read_bytes() == (tmp_path / f"{name}.gif").read_bytes(), name


@pytest.mark.parametrize("args, message", [
    (["--truncation", "1.5,0"], "--truncation 1.5 is out of range"),
    (["--truncation", "1,half"], "--truncation '1,half' is not a comma-separated list of numbers"),
    (["--truncation", "0.7"], "--truncation needs at least 2 values"),
    (["--frames", 1], "--frames 1: a path needs at least 2 frames"),
    (["--seed", -1], "--seed -1 is out of range"),
])
def test_bad_options_are_one_line_and_write_nothing(conditional_run, tmp_path, capsys, args, message):
    code, err = explore(capsys, conditional_run, "--out", tmp_path / "out", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_no_rows_is_a_usage_error(conditional_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["explore", conditional_run, "--out", str(tmp_path / "out"), "--rows", "0"])
    assert exited.value.code == 2 and "--rows: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_earlier_exploration_is_never_overwritten(unconditional_run, tmp_path, capsys):
    assert explore(capsys, unconditional_run, "--out", tmp_path, *SMALL)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, err = explore(capsys, unconditional_run, "--out", tmp_path, *SMALL, "--seed", 1)
    assert code == 2 and "already holds an exploration (interpolations.gif, interpolations.png" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_translators_checkpoint_is_refused(tiny_data, tiny_domain_b, tmp_path, capsys):
    train(tiny_translation_config(tiny_data, tiny_domain_b, str(tmp_path), **{"train.steps": 3}))
    code, err = explore(capsys, tmp_path / "tiny", "--out", tmp_path / "out")
    assert code == 2 and "is a translator's checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_unreachable_storage_is_one_line(conditional_run, s3_server, tmp_path, capsys):
    code, err = explore(capsys, conditional_run, "--out", "s3://no-such-bucket/explore")
    assert code == 2 and "bucket 'no-such-bucket' of s3://no-such-bucket/explore does not exist" in err
    code, err = explore(capsys, "s3://no-such-bucket/runs/tiny", "--out", tmp_path / "out")
    assert code == 2 and "bucket 'no-such-bucket'" in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(conditional_run, tmp_path, capsys):
    code, err = explore(capsys, conditional_run, "--out", tmp_path, "--device", "cuda")
    assert code == 2 and "torch sees no CUDA device" in err


def test_gif_bytes_are_a_looping_animation_of_the_frames():
    from gan_dist.imaging import gif_bytes

    frames = [torch.full((1, 4, 6), value, dtype=torch.uint8) for value in (0, 128, 255)]
    gif = Image.open(io.BytesIO(gif_bytes(frames, 50)))
    assert (gif.n_frames, gif.size, gif.info["loop"], gif.info["duration"]) == (3, (6, 4), 0, 50)
    gif.seek(1)
    assert np.asarray(gif.convert("L")).tolist() == [[128] * 6] * 4
    red = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None].expand(3, 4, 6)
    rgb = [red, frames[0].expand(3, 4, 6)]
    gif = Image.open(io.BytesIO(gif_bytes(rgb, 50)))
    assert gif.n_frames == 2 and gif.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
