"""Local paths on a cluster of several machines, simulated on one: a Ray head started outside, and the driver in
a private mount namespace whose cache (and any folder under it) is a tmpfs that the workers cannot see, as a
laptop's or a driver pod's disk is invisible to the other nodes."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gan_dist.data.reader import read_manifest
from gan_dist.data.embedded import embedded_digits
from helpers import GAN_DIST, free_port, wait_for_port

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private mount")]

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def outside_head(tmp_path_factory):
    """A Ray head (its own processes, session folder and port) whose workers see the real filesystem."""
    port = free_port()
    node_cache = tmp_path_factory.mktemp("node-cache")
    env = dict(os.environ, GAN_DIST_CACHE=str(node_cache), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    session = tempfile.mkdtemp(prefix="rsim", dir="/tmp")  # Ray's socket paths must stay short
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=4", "--include-dashboard=false",
                             f"--temp-dir={session}", "--block"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if not wait_for_port(port, head, 120):
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the outside Ray head did not start; see head.log")
    yield f"127.0.0.1:{port}", node_cache
    os.killpg(head.pid, signal.SIGTERM)  # the head and everything it started, not the session's own Ray
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(session, ignore_errors=True)


def driver(address: str, private: Path, *commands: str) -> subprocess.CompletedProcess:
    """Run gan-dist commands as a driver whose cache folder `private` exists for it alone."""
    script = f"mount -t tmpfs tmpfs {private} && " + " && ".join(commands)
    env = dict(os.environ, GAN_DIST_CACHE=str(private), RAY_ADDRESS="", RAY_AUTH_MODE="disabled")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                          capture_output=True, text=True, timeout=400)
    if "mount:" in done.stderr or "unshare:" in done.stderr:
        pytest.skip(f"cannot make a private mount here: {done.stderr.strip()[:200]}")
    return done


def train(address: str, *args: str) -> str:
    return " ".join([GAN_DIST, "train", "--address", address, "--num-workers", "2", "--steps", "2",
                     "--set", "train.checkpoint_every=2", *args])


def our_errors(done: subprocess.CompletedProcess) -> list[str]:
    """gan-dist's own error lines (Ray's log lines from other processes may run into them on a shared stderr)."""
    return [line[line.index("gan-dist: error:"):] for line in done.stderr.splitlines() if "gan-dist: error:" in line]


def test_workers_prepare_the_embedded_digits_on_their_own_node(outside_head, tmp_path):
    address, node_cache = outside_head
    private = tmp_path / "private"
    private.mkdir()
    done = driver(address, private, train(address, "--storage", str(tmp_path / "runs"), "--name", "shared"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "shared" / "checkpoint_000000002" / "meta.json").is_file()
    # The workers' node made its own copy, byte for byte the dataset the driver made (same content hash).
    assert read_manifest(str(node_cache / "digits-32")).content_hash == read_manifest(embedded_digits()).content_hash
    assert not list(private.iterdir())  # the driver's tmpfs is gone with its namespace: nothing leaked out


def test_local_data_or_storage_a_worker_cannot_see_stops_before_training(outside_head, tmp_path):
    address, _ = outside_head
    private = tmp_path / "private"
    private.mkdir()
    prepare = f"{GAN_DIST} prepare digits {private}/data > /dev/null 2>&1"
    unseen_data = driver(address, private, prepare,
                         train(address, "--data", f"{private}/data", "--storage", str(tmp_path / "runs")))
    unseen_storage = driver(address, private, train(address, "--storage", f"{private}/runs"))
    for done, expected in ((unseen_data, f"--data {private}/data is not the driver's dataset as the worker on"),
                           (unseen_storage, f"--storage {private}/runs is a local folder that the worker on")):
        assert done.returncode == 2, done.stderr[-3000:]
        assert [line for line in our_errors(done) if expected in line] == our_errors(done) != []
        assert "object storage" in our_errors(done)[0]
        assert "Traceback" not in done.stderr and "re-run `gan-dist prepare`" not in done.stderr
    assert not list((tmp_path / "runs").glob("*/checkpoint_*"))  # nothing trained
