"""Bad and odd input to the inference commands (sample, explore, translate, complete) and to bench, through the real
CLI in this process: each is one line and a non-zero exit with nothing written lost, or the right behaviour. And the
one way they ask a checkpoint what it holds: checkpoint.expect and checkpoint.read_model."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gan_dist import checkpoint, cli, storage
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from gan_dist.train.tasks import TASKS
from helpers import tiny_config, tiny_inpaint_config, tiny_translation_config

CKPT = "checkpoint_000000006"


@pytest.fixture(scope="module")
def runs(tiny_data, tiny_domain_b, tmp_path_factory, one_thread):
    """A tiny run of each kind inference serves: a generator, a CycleGAN translator, a completion net."""
    root = str(tmp_path_factory.mktemp("runs"))
    train(tiny_config(tiny_data, root, **{"run.name": "gen"}))
    train(tiny_translation_config(tiny_data, tiny_domain_b, root, **{"run.name": "cyc"}))
    train(tiny_inpaint_config(tiny_data, root, **{"run.name": "inp"}))
    return {name: os.path.join(root, name) for name in ("gen", "cyc", "inp")}


def write_image(path, seed: int = 0, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def files_under(folder) -> list[str]:
    """Every file, hidden ones too, relative to `folder`."""
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gan-dist: error: ") and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


COMMANDS = {  # what each command is given besides CKPT: (use, argv after CKPT)
    "sample": ("gen", ["--num", "2", "--out", "{out}"]),
    "explore": ("gen", ["--out", "{out}", "--rows", "1", "--frames", "2"]),
    "translate": ("cyc", ["--input", "{inputs}", "--out", "{out}"]),
    "complete": ("inp", ["--input", "{inputs}", "--out", "{out}"]),
}


def argv_for(command: str, ckpt: str, tmp_path) -> list[str]:
    inputs = tmp_path / "in"
    write_image(inputs / "a.png")
    rest = [a.format(out=tmp_path / "out", inputs=inputs) for a in COMMANDS[command][1]]
    return [command, ckpt, *rest]


# ---- asking a checkpoint what it holds ------------------------------------------------------------------------------

def test_expect_names_the_exports_serving_a_use_and_points_elsewhere_in_one_line():
    meta = {"exports": {"translator_a2b": ["translate", "evaluate"], "translator_b2a": ["translate", "evaluate"]}}
    assert checkpoint.expect(meta, "translate") == ["translator_a2b", "translator_b2a"]
    with pytest.raises(UserError, match=r"^ckpt is a translator's checkpoint, not an image generator's checkpoint; "
                                        r"translate images with it: gan-dist translate CKPT"):
        checkpoint.expect(meta, "sample", "ckpt")
    with pytest.raises(UserError, match="is an inpainting checkpoint, not a translator's checkpoint; fill holes"):
        checkpoint.expect({"exports": {"completer": ["complete", "evaluate"]}}, "translate")


def test_checkpoints_written_before_exports_were_recorded_are_asked_by_their_kind():
    """No "exports" in meta.json: what its config.task.kind (generation where absent) exported then, which is what
    that task exports today."""
    for kind, task in TASKS.items():
        meta = {"config": {"task": {"kind": kind}}} if kind != "generation" else {"config": {}}
        if kind in ("generation", "cyclegan", "cut", "inpaint"):  # the kinds of before
            assert checkpoint.exports(meta) == {stem: list(uses) for stem, uses in task.EXPORTS.items()}, kind
    assert checkpoint.expect({"config": {}}, "explore") == ["generator"]
    assert checkpoint.expect({"config": {"task": {"kind": "cut"}}}, "translate") == ["translator_a2b"]
    with pytest.raises(UserError, match="records no exports and its task 'pix3pix' is none this gan-dist knows"):
        checkpoint.expect({"config": {"task": {"kind": "pix3pix"}}}, "sample")


def test_training_records_what_each_export_serves(runs):
    assert checkpoint.load_meta(os.path.join(runs["cyc"], CKPT))["exports"] == {
        "translator_a2b": ["translate", "evaluate"], "translator_b2a": ["translate", "evaluate"]}


def test_the_model_section_reader_names_a_meta_json_that_describes_no_nets(runs):
    meta = checkpoint.load_meta(os.path.join(runs["cyc"], CKPT))
    saved = checkpoint.read_model("ckpt", meta)
    assert saved.model.arch == "resnet_patchgan" and saved.images["b"].resolution == 16
    del meta["config"]["model"]["g_channels"], meta["datasets"]["a"]["channels"]
    with pytest.raises(checkpoint.CorruptCheckpoint, match="^ckpt: meta.json does not describe its nets"):
        checkpoint.read_model("ckpt", meta)


# ---- checkpoints that do not load ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(COMMANDS))
def test_weights_that_do_not_fit_the_model_section_are_one_line(command, runs, tmp_path, capsys):
    """meta.json says g_channels=16, the weights were trained at 4 or 8: a line naming the file, not a traceback."""
    run = COMMANDS[command][0]
    ckpt = tmp_path / "edited" / CKPT
    shutil.copytree(os.path.join(runs[run], CKPT), ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["config"]["model"]["g_channels"] = 16
    (ckpt / "meta.json").write_text(json.dumps(meta))
    export = {"gen": "generator", "cyc": "translator_a2b", "inp": "completer"}[run]
    one_line_error(capsys, argv_for(command, str(ckpt), tmp_path),
                   f"{ckpt}: {export}.safetensors does not fit the nets its meta.json describes (size mismatch")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "none complete; the newest, checkpoint_000000006: translator_a2b.safetensors has 100 of"),
    ("flip", "loads; the newest: {ckpt}: translator_a2b.safetensors does not match its checksum"),
])
def test_a_damaged_file_is_named_when_a_run_directory_is_given(damage, expected, runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(os.path.join(runs["cyc"], CKPT), run / CKPT)
    export = run / CKPT / "translator_a2b.safetensors"
    data = bytearray(export.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    export.write_bytes(bytes(data if damage == "flip" else data[:100]))
    assert cli.main(argv_for("translate", str(run), tmp_path)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("gan-dist: error: ") and expected.format(ckpt=run / CKPT) in last, last


def test_an_empty_checkpoint_argument_is_one_line(capsys, tmp_path):
    one_line_error(capsys, ["sample", "", "--num", "1", "--out", str(tmp_path / "out")], "CKPT is empty")


# ---- input folders -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["translate", "complete"])
def test_a_folder_linking_back_to_its_parent_is_read_once(command, runs, tmp_path, capsys):
    """`up -> ..` and `me -> .` would be followed until the path is too long (hundreds of copies); each real folder
    is read once, as `prepare` reads it."""
    inputs = tmp_path / "in"
    write_image(inputs / "a.png")
    write_image(inputs / "sub" / "b.png", 1)
    os.symlink("..", inputs / "sub" / "up")
    os.symlink(".", inputs / "me")
    argv = [command, runs[COMMANDS[command][0]], "--input", str(inputs), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    assert "wrote 2 " in capsys.readouterr().out
    assert [f for f in files_under(tmp_path / "out") if not f.startswith(".")] == ["a.png", "sub/b.png"]


@pytest.mark.parametrize("command", ["translate", "complete"])
def test_inputs_differing_only_in_extension_each_get_their_own_output(command, runs, tmp_path, capsys):
    inputs = tmp_path / "in"
    for seed, (name, fmt) in enumerate([("x.png", "PNG"), ("x.PNG", "PNG"), ("x.jpg", "JPEG"), ("y.jpg", "JPEG")]):
        write_image(inputs / name, seed, fmt)
    argv = [command, runs[COMMANDS[command][0]], "--input", str(inputs), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    assert "wrote 4 " in capsys.readouterr().out
    outputs = [f for f in files_under(tmp_path / "out") if not f.startswith(".")]
    assert outputs == ["x.PNG.png", "x.jpg.png", "x.png", "y.png"]
    assert len({(tmp_path / "out" / f).read_bytes() for f in outputs}) == 4  # four images, none written over


@pytest.mark.parametrize("argv, expected", [
    (["--input", ""], "--input is empty; pass a folder of images"),  # was the current folder, read recursively
    (["--mask", ""], "--mask is empty"),
    (["--mask", "{inputs}"], "is a folder; pass center, random or a mask image"),
    (["--mask", "random", "--seed", "-1"], "--seed -1 is out of range for --mask random"),
])
def test_bad_complete_flags_are_one_line(argv, expected, runs, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_image(inputs / "a.png")
    flags = {"--input": str(inputs), "--out": str(tmp_path / "out")}
    flags.update((flag, value.format(inputs=inputs)) for flag, value in zip(argv[::2], argv[1::2]))
    one_line_error(capsys, ["complete", runs["inp"], *[part for pair in flags.items() for part in pair]], expected)
    assert not (tmp_path / "out").exists()


# ---- an interrupted batch is finished by running it again ----------------------------------------------------------

def interrupt_after(monkeypatch, writes: int) -> None:
    """Ctrl-C during the write of output number `writes` + 1, half of it on disk."""
    real_resolve, count = storage.resolve, [0]

    class Stream:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def write(self, data):
            count[0] += 1
            if count[0] > writes:
                self.stream.write(bytes(data)[: len(data) // 2])
                raise KeyboardInterrupt
            self.stream.write(data)

    class FS:
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def open_output_stream(self, path):
            return Stream(self.fs.open_output_stream(path))

    def resolve(uri):
        fs, path = real_resolve(uri)
        return (FS(fs) if path.endswith(".png") else fs), path  # an output image, not the job record

    monkeypatch.setattr(storage, "resolve", resolve)


def test_an_interrupted_write_leaves_no_file_behind(tmp_path, monkeypatch):
    interrupt_after(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(tmp_path / "x.png"), b"0123456789" * 100)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("command", ["translate", "complete"])
def test_an_interrupted_batch_is_finished_by_running_it_again(command, runs, tmp_path, capsys, monkeypatch):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(5):
        write_image(inputs / f"{i}.png", i)
    argv = [command, runs[COMMANDS[command][0]], "--input", str(inputs), "--out", str(out), "--batch-size", "1"]
    if command == "complete":
        argv += ["--mask", "random", "--seed", "3"]  # masks drawn per input: a finished run must draw the same
    assert cli.main(argv) == 0
    whole = {f: (out / f).read_bytes() for f in files_under(out) if not f.startswith(".")}
    capsys.readouterr()
    shutil.rmtree(out)

    interrupt_after(monkeypatch, 2)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted; the images written are whole: run the same command again" in err and "--resume" not in err
    assert [f for f in files_under(out) if not f.startswith(".gan-dist-job")] == ["0.png", "1.png"]  # no torn file
    monkeypatch.undo()
    before = (out / "0.png").stat().st_mtime_ns

    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "holds 2 of the 5 outputs from an interrupted run of this command; writing the other 3" in captured.err
    assert "wrote 3 " in captured.out
    assert {f: (out / f).read_bytes() for f in files_under(out) if not f.startswith(".")} == whole
    assert (out / "0.png").stat().st_mtime_ns == before  # kept, not written again


def test_outputs_of_another_command_are_never_overwritten(runs, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_image(inputs / "a.png")
    assert cli.main(["translate", runs["cyc"], "--input", str(inputs), "--out", str(out)]) == 0
    capsys.readouterr()
    written = (out / "a.png").read_bytes()
    one_line_error(capsys, ["translate", runs["cyc"], "--input", str(inputs), "--out", str(out), "--direction",
                            "b2a"], f"{out} already holds 1 of the outputs (e.g. a.png), not written by this command")
    (out / ".gan-dist-job.json").unlink()  # outputs of unknown origin (an older gan-dist, another tool)
    one_line_error(capsys, ["translate", runs["cyc"], "--input", str(inputs), "--out", str(out)], "already holds")
    assert (out / "a.png").read_bytes() == written


# ---- object storage ------------------------------------------------------------------------------------------------

def test_s3_uris_that_do_not_exist_are_one_line(runs, bucket, tmp_path, capsys):
    inputs, out = tmp_path / "in", str(tmp_path / "out")
    write_image(inputs / "a.png")
    one_line_error(capsys, ["translate", f"s3://{bucket}/no-run", "--input", str(inputs), "--out", out],
                   f"no complete checkpoint at s3://{bucket}/no-run")
    one_line_error(capsys, ["translate", runs["cyc"], "--input", f"s3://{bucket}/no-images", "--out", out],
                   f"--input s3://{bucket}/no-images is not a folder of images")
    one_line_error(capsys, ["complete", runs["inp"], "--input", str(inputs), "--out", out, "--mask",
                            f"s3://{bucket}/no-mask.png"], "is neither center, random nor an existing file")
    one_line_error(capsys, ["sample", runs["gen"], "--num", "1", "--out", "s3://no-such-bucket-here/x"],
                   "bucket 'no-such-bucket-here' of s3://no-such-bucket-here/x does not exist")
    assert not os.path.exists(out)


# ---- bench on every task -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["cyclegan-digits", "cut-digits", "inpaint-digits"])
def test_bench_times_the_step_of_every_task(preset, capsys, one_thread):
    tiny = ["--device", "cpu", "--steps", "1", "--warmup", "1", "--repeats", "1", "--batch-size", "2",
            "--resolution", "16", "--channels", "1", "--set", "model.g_channels=4", "--set", "model.d_channels=4",
            "--set", "model.blocks=1", "--set", "model.d_layers=1"]
    assert cli.main(["bench", preset, *tiny]) == 0
    rows = {line.split()[0]: float(line.split()[1].replace(",", "")) for line in
            capsys.readouterr().out.splitlines()[1:]}
    assert rows.keys() == {"synthetic", "resident", "stream"} and all(v > 0 for v in rows.values())


def test_bench_refuses_a_size_the_translators_cannot_take_in_one_line(capsys):
    one_line_error(capsys, ["bench", "cyclegan-digits", "--device", "cpu", "--resolution", "6", "--channels", "1"],
                   "need image sides divisible by 4, and these are 6")
