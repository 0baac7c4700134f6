"""The KubeRay manifests in k8s/, rendered through k8s/kustomization.yaml, validated offline against the KubeRay
v1.7.0 CRDs (tests/data/kuberay/), the core Kubernetes schemas and the rules of spot groups and of the training
worker range; broken copies must be rejected by name."""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gan_dist import cli
from k8s_validate import (ManifestValidator, cluster_spec, config_maps, containers, environment, load_documents,
                          render_kustomization, spot_groups, worker_range_errors)

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "k8s"
CRD_DIR = Path(__file__).resolve().parent / "data" / "kuberay"
SMOKE_ENTRYPOINT = "python jobs/train.py --name smoke --steps 20 --batch-size 32 --resume"
RAY_KINDS = ("RayJob", "RayCluster")
GPU_WORKLOADS = (("RayJob", "gan-dist-train-gpu"), ("RayCluster", "gan-dist"))


@pytest.fixture(scope="module")
def validator() -> ManifestValidator:
    return ManifestValidator(CRD_DIR)  # the CRDs are large: load them once


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """What `kubectl apply -k k8s/` creates, plus the Secret example users fill in and apply themselves."""
    return render_kustomization(K8S_DIR) + load_documents((K8S_DIR / "secret-example.yaml").read_text())


def find(resources: list[dict], kind: str, name: str) -> dict:
    (obj,) = [o for o in resources if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def worker_groups(obj: dict) -> list[dict]:
    cluster = obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]
    return cluster["workerGroupSpecs"]


def test_the_kustomization_renders_every_workload_and_no_secret():
    # Secrets stay out of the kustomization: `kubectl apply -k` must never overwrite real credentials.
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in render_kustomization(K8S_DIR)}
    assert names == {
        ("ConfigMap", "gan-dist-config"),
        ("RayJob", "gan-dist-smoke"),
        ("RayJob", "gan-dist-train-gpu"),
        ("RayCluster", "gan-dist"),
    }


def test_every_rendered_manifest_is_valid(rendered, validator):
    errors = [error for obj in rendered for error in validator.errors(obj)]
    assert errors == []


def test_smoke_entrypoint_is_the_one_the_ray_tests_submit(rendered):
    assert find(rendered, "RayJob", "gan-dist-smoke")["spec"]["entrypoint"] == SMOKE_ENTRYPOINT


def test_images_come_from_the_kustomization(rendered):
    (kustomization,) = load_documents((K8S_DIR / "kustomization.yaml").read_text())
    expected = {f"{image['newName']}:{image['newTag']}" for image in kustomization["images"]}
    assert {c["image"] for c in containers(rendered)} == expected


def test_dockerfile_base_matches_ray_version(rendered):
    base = re.search(r"^ARG BASE_IMAGE=rayproject/ray:(\d+\.\d+\.\d+)-", (K8S_DIR / "Dockerfile").read_text(), re.M)
    versions = {obj["spec"].get("rayClusterSpec", obj["spec"])["rayVersion"] for obj in rendered
                if obj["kind"] in RAY_KINDS}
    assert versions == {base.group(1)}


def test_every_ray_pod_gets_settings_and_secrets(rendered):
    for container in containers([obj for obj in rendered if obj["kind"] in RAY_KINDS]):
        env = {var["name"]: var for var in container["env"]}
        assert {"GAN_DIST_STORAGE", "GAN_DIST_NUM_WORKERS", "WANDB_MODE", "WANDB_API_KEY"} <= set(env)
        assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "gan-dist-wandb", "key": "api-key", "optional": True}
        assert {"secretRef": {"name": "gan-dist-aws"}} in container["envFrom"]


def test_worker_range_agrees_with_the_worker_groups(rendered):
    assert worker_range_errors(rendered) == []


def _configured_range(resources: list[dict]) -> str:
    return find(resources, "ConfigMap", "gan-dist-config")["data"]["GAN_DIST_NUM_WORKERS"]


def test_gpu_workloads_are_elastic_on_spot_by_default(rendered):
    # Spot-friendly out of the box: an on-demand floor, a spot group the autoscaler fills, and a MIN-MAX range.
    low, high = map(int, _configured_range(rendered).split("-"))
    assert low < high
    for kind, name in GPU_WORKLOADS:
        cluster = cluster_spec(find(rendered, kind, name))
        assert [group["groupName"] for group in spot_groups(cluster)] == ["gpu-spot-workers"], name
        assert cluster["enableInTreeAutoscaling"] is True, name


def _jobs_train_args() -> Callable[[list[str], dict[str, str]], list[str]]:
    """jobs/train.py's train_args: how the job driver turns its command line and environment into `gan-dist train`."""
    spec = importlib.util.spec_from_file_location("jobs_train", ROOT / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_args


@pytest.mark.parametrize("name", ["gan-dist-smoke", "gan-dist-train-gpu"])
def test_each_rayjob_builds_a_config_that_train_accepts(name, rendered):
    # The driver runs the entrypoint on the head, with the head's environment. What `gan-dist train` refuses (a
    # range whose sizes cannot all split the preset's global batch, an unknown flag) would end the job FAILED.
    rayjob = find(rendered, "RayJob", name)
    python, script, *argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert (python, script) == ("python", "jobs/train.py")
    head = cluster_spec(rayjob)["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = environment(head, config_maps(rendered))
    config = cli._config(cli._parser().parse_args(_jobs_train_args()(argv, env)))
    assert str(config.run.num_workers) == env["GAN_DIST_NUM_WORKERS"]
    assert config.run.storage == env["GAN_DIST_STORAGE"]


def _edited_kustomization(tmp_path: Path, bucket: str, workers: str, on_demand: int, spot: int) -> list[dict]:
    """What a user does in k8s/kustomization.yaml: another bucket, range and group sizes (group 0 is on-demand,
    group 1 spot), rendered from a copy."""
    text = (K8S_DIR / "kustomization.yaml").read_text()
    text = text.replace("  - base\n", f"  - {K8S_DIR / 'base'}\n").replace("s3://REPLACE_ME/runs", bucket)
    text = re.sub(r'GAN_DIST_NUM_WORKERS: "[^"]*"', f'GAN_DIST_NUM_WORKERS: "{workers}"', text)
    text = re.sub(r"(workerGroupSpecs/0/\w*[rR]eplicas\n +value:) \d+", rf"\1 {on_demand}", text)
    text = re.sub(r"(workerGroupSpecs/1/maxReplicas\n +value:) \d+", rf"\1 {spot}", text)
    (tmp_path / "kustomization.yaml").write_text(text)
    return render_kustomization(tmp_path)


@pytest.mark.parametrize("workers, on_demand, spot", [("2-4", 2, 2), ("2", 2, 0), ("1-3", 1, 2)])
def test_the_documented_edits_reach_the_manifests(tmp_path, validator, workers, on_demand, spot):
    resources = _edited_kustomization(tmp_path, "s3://my-bucket/runs", workers, on_demand, spot)
    assert find(resources, "ConfigMap", "gan-dist-config")["data"]["GAN_DIST_STORAGE"] == "s3://my-bucket/runs"
    for kind, name in GPU_WORKLOADS:
        groups = worker_groups(find(resources, kind, name))
        assert [(g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in groups] == [
            (on_demand, on_demand, on_demand), (0, 0, spot)], name
    assert worker_groups(find(resources, "RayJob", "gan-dist-smoke"))[0]["replicas"] == 2  # fixed size
    assert worker_range_errors(resources) == []
    assert [error for obj in resources for error in validator.errors(obj)] == []


def _set_entrypoint_workers(resources: list[dict]) -> None:
    rayjob = find(resources, "RayJob", "gan-dist-train-gpu")
    rayjob["spec"]["entrypoint"] += " --num-workers 2"


def _literal_range_on_the_head(resources: list[dict]) -> None:
    head = cluster_spec(find(resources, "RayCluster", "gan-dist"))["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["env"][0] = {"name": "GAN_DIST_NUM_WORKERS", "value": "1-3"}


def _configure_range(workers: str) -> Callable[[list[dict]], None]:
    def mutate(resources: list[dict]) -> None:
        find(resources, "ConfigMap", "gan-dist-config")["data"]["GAN_DIST_NUM_WORKERS"] = workers
    return mutate


BROKEN_RANGES = {
    # The ConfigMap's range is read by both GPU workloads.
    "range beyond the groups": (_configure_range("1-3"), [
        "RayJob/gan-dist-train-gpu: training workers 1-3 but the worker groups hold 1-2",
        "RayCluster/gan-dist: training workers 1-3 but the worker groups hold 1-2"]),
    "not a range": (_configure_range("two"), ["RayJob/gan-dist-train-gpu: training workers 'two' are not N or MIN-MAX",
                                              "RayCluster/gan-dist: training workers 'two' are not N or MIN-MAX"]),
    "entrypoint flag wins over the variable": (_set_entrypoint_workers, [
        "RayJob/gan-dist-train-gpu: training workers 2 but the worker groups hold 1-2"]),
    "pods disagree": (_literal_range_on_the_head, ["RayCluster/gan-dist: its pods disagree on GAN_DIST_NUM_WORKERS"]),
}


@pytest.mark.parametrize("name", list(BROKEN_RANGES))
def test_a_range_that_disagrees_with_the_groups_is_named(name, rendered):
    mutate, expected = BROKEN_RANGES[name]
    resources = copy.deepcopy(rendered)
    mutate(resources)
    errors = worker_range_errors(resources)
    assert len(errors) == len(expected) and all(e.startswith(x) for e, x in zip(errors, expected)), errors


def test_example_secrets_hold_placeholders_only(rendered):
    for secret in (obj for obj in rendered if obj["kind"] == "Secret"):
        assert set(secret["stringData"].values()) == {"REPLACE_ME"}


def test_worker_replica_bounds_default_before_required_is_checked(rendered, validator):
    rayjob = copy.deepcopy(find(rendered, "RayJob", "gan-dist-smoke"))
    group = worker_groups(rayjob)[0]
    del group["minReplicas"], group["maxReplicas"]  # required by the CRD, but both have defaults
    assert validator.errors(rayjob) == []


def _parent(obj: dict, path: str) -> tuple[dict | list, str | int]:
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for key in parents:
        obj = obj[key]
    return obj, last


def _set(path: str, value: object) -> Callable[[dict], None]:
    """A mutation that sets the dotted `path` (list indexes as numbers) to `value`."""
    def mutate(obj: dict) -> None:
        parent, key = _parent(obj, path)
        parent[key] = value
    return mutate


def _delete(path: str) -> Callable[[dict], None]:
    def mutate(obj: dict) -> None:
        parent, key = _parent(obj, path)
        del parent[key]
    return mutate


def _gpu_resources(obj: dict) -> dict:
    return obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]


def _drop_gpu_limit(obj: dict) -> None:
    del _gpu_resources(obj)["limits"]["nvidia.com/gpu"]


def _request_two_gpus(obj: dict) -> None:
    _gpu_resources(obj)["requests"]["nvidia.com/gpu"] = "2"


def _misspell_shutdown(obj: dict) -> None:
    obj["spec"]["shutdownAfterJobFinish"] = obj["spec"].pop("shutdownAfterJobFinishes")


def _suspend_without_shutdown(obj: dict) -> None:
    del obj["spec"]["shutdownAfterJobFinishes"], obj["spec"]["ttlSecondsAfterFinished"]
    obj["spec"]["suspend"] = True


HEAD = "spec.rayClusterSpec.headGroupSpec.template.spec.containers.0"
GROUP = "spec.rayClusterSpec.workerGroupSpecs.0"
SPOT = "spec.rayClusterSpec.workerGroupSpecs.1"  # of gan-dist-train-gpu; group 0 is on demand


def _spot_by_node_selector_without_the_gke_toleration(obj: dict) -> None:
    pod = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]
    del pod["affinity"]
    pod["nodeSelector"] = {"cloud.google.com/gke-spot": "true"}
    pod["tolerations"] = [t for t in pod["tolerations"] if t["key"] != "cloud.google.com/gke-spot"]


BROKEN = {
    "misspelled field": ("gan-dist-smoke", _misspell_shutdown, "'shutdownAfterJobFinish' was unexpected"),
    "misspelled container field": ("gan-dist-smoke", _set(f"{HEAD}.resource", {}), "'resource' was unexpected"),
    "wrong type": ("gan-dist-smoke", _set("spec.backoffLimit", "two"), "'two' is not of type 'integer'"),
    "container without name": ("gan-dist-smoke", _delete(f"{HEAD}.name"), "'name' is a required property"),
    "group without groupName": ("gan-dist-smoke", _delete(f"{GROUP}.groupName"),
                                "'groupName' is a required property"),
    "gpu without limit": ("gan-dist-train-gpu", _drop_gpu_limit, "nvidia.com/gpu requested without a limit"),
    "gpu requests differ": ("gan-dist-train-gpu", _request_two_gpus, "requests (2) differ from limits (1)"),
    "ttl without shutdown": ("gan-dist-smoke", _delete("spec.shutdownAfterJobFinishes"),
                             "ttlSecondsAfterFinished requires spec.shutdownAfterJobFinishes"),
    "suspend without shutdown": ("gan-dist-smoke", _suspend_without_shutdown,
                                 "spec.suspend requires spec.shutdownAfterJobFinishes"),
    "cluster spec and selector": ("gan-dist-smoke", _set("spec.clusterSelector", {"ray.io/cluster": "x"}),
                                  "exactly one of rayClusterSpec and clusterSelector"),
    "unknown submission mode": ("gan-dist-smoke", _set("spec.submissionMode", "K8sMode"),
                                "submissionMode 'K8sMode' is not one of"),
    "runtime env does not parse": ("gan-dist-smoke", _set("spec.runtimeEnvYAML", "env_vars: [unclosed"),
                                   "runtimeEnvYAML does not parse"),
    "runtime env number": ("gan-dist-smoke", _set("spec.runtimeEnvYAML", "env_vars:\n  STEPS: 20\n"),
                           "env_vars.STEPS must be a string"),
    "name too long": ("gan-dist-smoke", _set("metadata.name", "gan-dist-" + "x" * 40),
                      "longer than 47 characters"),
    "ray version mismatch": ("gan-dist-smoke", _set(f"{HEAD}.image", "rayproject/ray:2.52.0-py311"),
                             "rayVersion '2.60.0' does not match image rayproject/ray:2.52.0-py311"),
    "literal secret": ("gan-dist-smoke", _set(f"{HEAD}.env.0", {"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}),
                       "env AWS_SECRET_ACCESS_KEY has a literal value"),
    "min above max": ("gan-dist-train-gpu", _set(f"{SPOT}.minReplicas", 3),
                      "worker group gpu-spot-workers has minReplicas 3 greater than maxReplicas 1"),
    "spot group without a spot toleration": (
        "gan-dist-train-gpu", _delete(f"{SPOT}.template.spec.tolerations.3"),
        "does not tolerate the taint kubernetes.azure.com/scalesetpriority=spot:NoSchedule"),
    "spot by node selector": ("gan-dist-train-gpu", _spot_by_node_selector_without_the_gke_toleration,
                              "does not tolerate the taint cloud.google.com/gke-spot=true:NoSchedule"),
    "head allowed on spot": ("gan-dist-train-gpu", _delete("spec.rayClusterSpec.headGroupSpec.template.spec.affinity"),
                             "head may land on spot nodes beside a spot group"),
    "on-demand group allowed on spot": (
        "gan-dist-train-gpu",
        _delete(f"{GROUP}.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
                "nodeSelectorTerms.0.matchExpressions.3"),
        "gpu-workers may land on spot nodes beside a spot group: no required node affinity excludes "
        "karpenter.sh/capacity-type=spot"),
    "spot group starts above its floor": ("gan-dist-train-gpu", _set(f"{SPOT}.replicas", 1),
                                          "gpu-spot-workers starts with replicas 1, above its minReplicas 0"),
    "spot group without the autoscaler": (
        "gan-dist-train-gpu", _set("spec.rayClusterSpec.enableInTreeAutoscaling", False),
        "gpu-spot-workers can grow from 0 to 1 pods only with enableInTreeAutoscaling: true"),
    "drain outlasts the grace period": (
        "gan-dist-train-gpu", _set(f"{SPOT}.template.spec.terminationGracePeriodSeconds", 10),
        "gpu-spot-workers: RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (10 s) must end before terminationGracePeriodSeconds "
        "(10 s)"),
    "grace shorter than Ray's default drain": (
        "gan-dist-train-gpu", _set(f"{GROUP}.template.spec.terminationGracePeriodSeconds", 20),
        "gpu-workers: RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (30 s) must end before terminationGracePeriodSeconds "
        "(20 s)"),
    "drain is not a number": ("gan-dist-train-gpu", _set(f"{SPOT}.template.spec.containers.0.env.4.value", "ten"),
                              "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S 'ten' is not a number of seconds"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_rayjob_is_rejected(name, rendered, validator):
    rayjob_name, mutate, expected = BROKEN[name]
    rayjob = copy.deepcopy(find(rendered, "RayJob", rayjob_name))
    mutate(rayjob)
    errors = validator.errors(rayjob)
    assert any(expected in error for error in errors), errors


def test_secret_with_unknown_field_is_rejected(rendered, validator):
    secret = copy.deepcopy(find(rendered, "Secret", "gan-dist-aws"))
    secret["stringdata"] = secret.pop("stringData")
    errors = validator.errors(secret)
    assert any("'stringdata' was unexpected" in error for error in errors), errors


def test_duplicate_yaml_key_is_rejected():
    text = "apiVersion: ray.io/v1\nkind: RayJob\nspec:\n  backoffLimit: 1\n  backoffLimit: 2\n"
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'backoffLimit'"):
        load_documents(text)


def test_config_map_with_a_secret_is_rejected(rendered, validator):
    config_map = copy.deepcopy(find(rendered, "ConfigMap", "gan-dist-config"))
    config_map["data"]["AWS_SECRET_ACCESS_KEY"] = "abc"
    errors = validator.errors(config_map)
    assert any("data.AWS_SECRET_ACCESS_KEY looks like a secret" in error for error in errors), errors


def test_patch_guard_fails_when_the_group_order_changes(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(K8S_DIR / "base")],
        "patches": [{
            "target": {"kind": "RayCluster", "name": "gan-dist"},
            "patch": yaml.safe_dump([{"op": "test", "path": "/spec/workerGroupSpecs/0/groupName",
                                      "value": "gpu-spot-workers"}]),
        }],
    }))
    with pytest.raises(ValueError, match="patch test failed"):
        render_kustomization(tmp_path)
