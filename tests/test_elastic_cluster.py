"""An elastic run on a Ray cluster of two nodes on this machine: a head and a second node started with
`ray start --address`, each with room for one training worker. The second node's processes are killed by their
PIDs mid-run: the run goes on with one worker and finishes; the node started again, the run grows back to two."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from gan_dist.config import load_config
from gan_dist.train.schedule import Schedule
from helpers import GAN_DIST, free_port, wait_for_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
# Ray notices a dead node after it has already tried to restart at the old size; it gives up on that attempt
# after this many seconds (60 by default) and restarts with the workers there is room for.
START_TIMEOUT_S = "15"
# G's learning rate follows a cosine over 10k images (~300 steps): a resized run must follow it by images seen.
SETTINGS = {"run.num_workers": "1-2", "train.batch_size": 16, "train.checkpoint_every": 25, "train.log_every": 5,
            "run.resize_check_s": 2, "eval.features": "off", "model.g_channels": 16, "model.d_channels": 16,
            "schedule.lr_g": 1e-5, "schedule.kimg": 10}
RUN = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
GLOBAL_BATCH = 32  # 16 × MAX at every size


def node_ports() -> list[str]:
    """Ports of one node's agents, free now: two nodes (and the session's own Ray) share this machine."""
    return [f"{flag}={free_port()}" for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                  "--metrics-export-port", "--runtime-env-agent-port")]


def descendants(pid: int) -> list[int]:
    """Every process started under `pid` (raylet, its agents, the training worker), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Cluster:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", RAY_ADDRESS="",
                        RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=START_TIMEOUT_S)
        self.session = tempfile.mkdtemp(prefix="rel", dir="/tmp")  # Ray's socket paths must stay short
        self.head = self._start("head", "--head", f"--port={self.port}", "--include-dashboard=false",
                                f"--ray-client-server-port={free_port()}", f"--temp-dir={self.session}")
        if not wait_for_port(self.port, self.head, 120):
            self.stop()
            pytest.fail("the Ray head did not start")
        self.node = None
        self.start_node()

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "a")
        return subprocess.Popen([RAY, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                 *node_ports(), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_node(self) -> None:
        self.node = self._start("node", f"--address=127.0.0.1:{self.port}")
        deadline = time.monotonic() + 120
        while self.nodes_alive() < 2:
            assert self.head.poll() is None, "the Ray head stopped; see head.log"
            assert time.monotonic() < deadline and self.node.poll() is None, "the second node did not join"
            time.sleep(1)

    def nodes_alive(self) -> int:
        """Counted by a driver of its own (this process may already be connected to the session's Ray)."""
        try:
            done = subprocess.run([sys.executable, "-c", "import ray; ray.init(logging_level='ERROR'); "
                                   "print(sum(n['Alive'] for n in ray.nodes()))"], capture_output=True, text=True,
                                  env=dict(self.env, RAY_ADDRESS=f"127.0.0.1:{self.port}"), timeout=60)
        except subprocess.TimeoutExpired:  # a head that is down or still starting
            return 0
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0

    def kill_node(self) -> None:
        """SIGKILL to each process of the second node, by PID: a machine gone, not a node shut down politely."""
        kill_all(self.node)

    def stop(self) -> None:
        """Both nodes and everything they started (a polite `ray stop` of two nodes takes half a minute here)."""
        for process in (self.node, self.head):
            if process is not None:
                kill_all(process)
        shutil.rmtree(self.session, ignore_errors=True)


def kill_all(process: subprocess.Popen) -> None:
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("elastic-cluster"))
    yield running
    running.stop()


def train(cluster: Cluster, storage: Path, name: str, steps: int) -> subprocess.Popen:
    return subprocess.Popen([GAN_DIST, "train", "--address", f"127.0.0.1:{cluster.port}", "--steps", str(steps),
                             "--storage", str(storage), "--name", name, *RUN], env=cluster.env,
                            stdout=open(storage.parent / f"{name}.log", "w"), stderr=subprocess.STDOUT)


def lines(run: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


class Watch:
    """A run's metrics.jsonl as it grows, each line with the second it was first seen: the resize timeline, printed
    for the record (`pytest -s`), never asserted on."""

    def __init__(self, driver: subprocess.Popen, run: Path):
        self.driver, self.run, self.started = driver, run, time.monotonic()
        self.seen: list[tuple[float, dict]] = []
        self.marks: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> list[dict]:
        logged = lines(self.run)
        self.seen += [(self.now(), line) for line in logged[len(self.seen):]]
        return logged

    def until(self, seen, what: str, seconds: float = 240) -> list[dict]:
        deadline = time.monotonic() + seconds
        while not seen(self.poll()):
            assert self.driver.poll() is None, f"the run ended before {what}"
            assert time.monotonic() < deadline, f"no {what} within {seconds} s"
            time.sleep(0.25)
        return self.poll()

    def mark(self, what: str) -> None:
        self.marks.append((self.now(), what))

    def finish(self, seconds: float = 600) -> int:
        deadline = time.monotonic() + seconds
        while self.driver.poll() is None and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.25)
        self.poll()
        return self.driver.wait(timeout=1)

    def timeline(self) -> str:
        """Marks and resizes, with the step the run had reached and the first step trained after each resize."""
        rows, reached = [f"{at:6.1f} s  {what}" for at, what in self.marks], 0
        for index, (at, line) in enumerate(self.seen):
            if line.get("event") == "resize":
                after = next(((t, l) for t, l in self.seen[index:] if "event" not in l), (at, line))
                rows.append(f"{at:6.1f} s  resize {line['workers_before']} -> {line['workers']} workers, resumed from "
                            f"step {line['step']} ({reached - line['step']} steps redone); step {after[1]['step']} "
                            f"logged at {after[0]:.1f} s")
            else:
                reached = max(reached, line.get("step", 0))
        rows.append(f"{self.now():6.1f} s  step {reached}, end")
        return "\n".join(sorted(rows, key=lambda row: float(row.split(" s ")[0])))


def assert_the_recipe_of_a_run_that_never_resized(logged: list[dict]) -> None:
    """Images seen and G's learning rate at every logged step: those of the global batch at every size."""
    cfg = load_config(None, SETTINGS)
    schedule = Schedule(cfg, GLOBAL_BATCH)
    for line in (line for line in logged if "event" not in line):
        before = line["step"] - 1  # the rate logged is the one the step trained with
        assert line["images_seen"] == line["step"] * GLOBAL_BATCH
        expected = cfg.train.lr_g * schedule.at(before, before * GLOBAL_BATCH).lr_factors["G"]
        assert line["lr_G"] == pytest.approx(expected, rel=1e-6), line


def resizes(logged: list[dict]) -> list[tuple[int, int]]:
    return [(line["workers_before"], line["workers"]) for line in logged if line.get("event") == "resize"]


def steps_at(logged: list[dict], workers: int) -> list[int]:
    return [line["step"] for line in logged if "event" not in line and line.get("workers") == workers]


def test_a_lost_node_leaves_the_run_going_on_with_fewer_workers_to_the_end(cluster, tmp_path):
    run = tmp_path / "runs" / "shrink"
    watch = Watch(train(cluster, tmp_path / "runs", "shrink", steps=600), run)
    watch.until(lambda logged: any(line["step"] >= 50 for line in logged), "step 50 at two workers")
    cluster.kill_node()
    watch.mark("the second node's processes killed")
    assert watch.finish() == 0, (tmp_path / "shrink.log").read_text()[-3000:]
    print(f"\nshrink timeline:\n{watch.timeline()}")
    logged = lines(run)
    assert resizes(logged) == [(2, 1)]
    resumed = next(line["step"] for line in logged if line.get("event") == "resize")
    assert resumed % 25 == 0 and resumed >= 50  # from a checkpoint written at two workers
    assert_the_recipe_of_a_run_that_never_resized(logged)
    assert steps_at(logged, 2)[0] == 5 and steps_at(logged, 1)[-1] == 600
    meta = json.loads((run / "checkpoint_000000600" / "meta.json").read_text())
    assert meta["workers"] == [[0, 2], [resumed, 1]] and meta["world_size"] == 1
    state = torch.load(run / "checkpoint_000000600" / "state.pt", weights_only=True)
    assert state["train"]["workers"] == meta["workers"]


def test_a_node_back_in_the_cluster_grows_the_run_back_to_its_most_workers(cluster, tmp_path):
    assert cluster.nodes_alive() == 1  # the node the test before killed
    run = tmp_path / "runs" / "grow"
    watch = Watch(train(cluster, tmp_path / "runs", "grow", steps=100000), run)
    try:
        watch.until(lambda logged: steps_at(logged, 1), "a step at one worker")
        watch.mark("starting the second node")
        cluster.start_node()
        watch.mark("the second node joined")
        logged = watch.until(lambda logged: any(step % 25 == 0 for step in steps_at(logged, 2)[1:]),
                             "a checkpoint after growing to two workers")
    finally:
        watch.driver.send_signal(signal.SIGINT)
        watch.driver.wait(timeout=120)
    print(f"\ngrow timeline:\n{watch.timeline()}")
    assert resizes(logged) == [(1, 2)]
    grown = next(line["step"] for line in logged if line.get("event") == "resize")
    assert_the_recipe_of_a_run_that_never_resized(logged)
    assert min(steps_at(logged, 2)) > grown
