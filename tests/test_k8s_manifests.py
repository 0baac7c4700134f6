"""The KubeRay manifests in k8s/, rendered through k8s/kustomization.yaml, validated offline against the KubeRay
v1.7.0 CRDs (tests/data/kuberay/) and the core Kubernetes schemas; broken copies must be rejected by name."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from k8s_validate import ManifestValidator, containers, load_documents, render_kustomization

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "k8s"
CRD_DIR = Path(__file__).resolve().parent / "data" / "kuberay"
SMOKE_ENTRYPOINT = "python jobs/train.py --name smoke --steps 20 --batch-size 32 --resume"
RAY_KINDS = ("RayJob", "RayCluster")


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


def assert_worker_counts_match(resources: list[dict]) -> None:
    # GAN_DIST_NUM_WORKERS and the group size are patched separately: a mismatch would hang or waste GPUs.
    for obj in (o for o in resources if o["kind"] in RAY_KINDS):
        (group,) = worker_groups(obj)
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"], obj["metadata"]["name"]
        counts = {var["value"] for c in containers(obj) for var in c["env"] if var["name"] == "GAN_DIST_NUM_WORKERS"}
        assert counts == {str(group["replicas"])}, obj["metadata"]["name"]


def test_worker_count_matches_the_worker_pods(rendered):
    assert_worker_counts_match(rendered)


def test_the_documented_edits_reach_the_manifests(tmp_path, validator):
    # What a user does in k8s/kustomization.yaml: another bucket and 4 GPU workers.
    text = (K8S_DIR / "kustomization.yaml").read_text()
    text = text.replace("  - base\n", f"  - {K8S_DIR / 'base'}\n")
    text = text.replace("s3://REPLACE_ME/runs", "s3://my-bucket/runs")
    text = text.replace('value: "2"', 'value: "4"').replace("value: 2\n", "value: 4\n")
    (tmp_path / "kustomization.yaml").write_text(text)
    resources = render_kustomization(tmp_path)
    assert find(resources, "ConfigMap", "gan-dist-config")["data"]["GAN_DIST_STORAGE"] == "s3://my-bucket/runs"
    assert worker_groups(find(resources, "RayJob", "gan-dist-train-gpu"))[0]["maxReplicas"] == 4
    assert worker_groups(find(resources, "RayCluster", "gan-dist"))[0]["replicas"] == 4
    assert worker_groups(find(resources, "RayJob", "gan-dist-smoke"))[0]["replicas"] == 2  # fixed size
    assert_worker_counts_match(resources)
    assert [error for obj in resources for error in validator.errors(obj)] == []


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


def test_patch_guard_fails_when_the_env_order_changes(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(K8S_DIR / "base")],
        "patches": [{
            "target": {"kind": "RayCluster", "name": "gan-dist"},
            "patch": yaml.safe_dump([{"op": "test", "path": "/spec/headGroupSpec/template/spec/containers/0/env/1/name",
                                      "value": "GAN_DIST_NUM_WORKERS"}]),
        }],
    }))
    with pytest.raises(ValueError, match="patch test failed"):
        render_kustomization(tmp_path)
