"""`ray job submit` against a real Ray head on 127.0.0.1, with the smoke RayJob's own entrypoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.ray


def smoke_entrypoint() -> str:
    """The entrypoint string of the CPU smoke RayJob in k8s/: the tests submit exactly what users apply."""
    manifest = yaml.safe_load((ROOT / "k8s" / "base" / "rayjob-smoke.yaml").read_text())
    return manifest["spec"]["entrypoint"].strip()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head of its own (not the session's cluster), stopped by the test: `ray start --block` in its own
    process group; SIGTERM makes it take down what it started."""
    ports = {flag: free_port() for flag in ("--port", "--dashboard-port", "--ray-client-server-port",
                                             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                             "--metrics-export-port", "--runtime-env-agent-port")}
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # jobs' `python` is this venv's
    args = [RAY, "start", "--head", "--block", "--num-cpus=4", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", "--include-dashboard=true",
            f"--temp-dir={tmp_path_factory.mktemp('ray-head')}", *(f"{k}={v}" for k, v in ports.items())]
    head = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    deadline = time.time() + 120
    while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode:
        if time.time() > deadline or head.poll() is not None:
            os.killpg(head.pid, signal.SIGKILL)
            pytest.fail("the Ray head did not come up")
        time.sleep(2)
    yield address, env
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def submit(address: str, env: dict, entrypoint: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    runtime_env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    runtime_env["env_vars"].update(extra_env)
    return subprocess.run([RAY, "job", "submit", "--address", address, "--runtime-env-json", json.dumps(runtime_env),
                           "--", *entrypoint.split()], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_smoke_job_succeeds_and_leaves_a_checkpoint(ray_head, tmp_path):
    address, env = ray_head
    done = submit(address, env, smoke_entrypoint(),
                  {"GAN_DIST_STORAGE": str(tmp_path), "GAN_DIST_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout.lower()
    assert (tmp_path / "smoke" / "checkpoint_000000020" / "state.pt").is_file()
    assert (tmp_path / "smoke" / "samples" / "step_000000020.png").is_file()


def test_job_with_a_bad_config_fails_with_the_one_line_error(ray_head, tmp_path):
    address, env = ray_head
    done = submit(address, env, smoke_entrypoint() + " --set train.lrr=1", {"GAN_DIST_STORAGE": str(tmp_path)})
    assert done.returncode != 0
    assert "failed" in (done.stdout + done.stderr).lower()
    assert "gan-dist: error: unknown config key 'train.lrr'" in done.stdout + done.stderr
