"""Offline checks for the manifests in k8s/: a small kustomize renderer (only the features k8s/ uses), strict
validation of RayJob/RayCluster against the KubeRay CRD schemas, the rules KubeRay only checks at runtime, the
rules of spot worker groups, the training worker range against the worker groups, and core kinds (Secret,
ConfigMap) through kubernetes-validate. Used by tests/test_k8s_manifests.py."""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# kubernetes-validate 1.37 bundles the schemas of Kubernetes 1.28 to 1.37.
KUBERNETES_VERSION = "1.33"
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
MAX_RAYJOB_NAME = 47
GPU_RESOURCE = "nvidia.com/gpu"
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|ACCESS_KEY", re.IGNORECASE)
RAY_IMAGE = re.compile(r"^(?:docker\.io/)?rayproject/(ray(?:-ml)?):(\d+\.\d+\.\d+)")
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}
MAX_REPLICAS_DEFAULT = 2**31 - 1  # the CRD's default maxReplicas
# How GKE, EKS managed node groups, AKS and Karpenter label (and, where the pool is tainted, taint) the nodes the
# cloud may reclaim: a pod that requires one of these runs on spot capacity.
SPOT_NODE_LABELS = {"cloud.google.com/gke-spot": "true", "eks.amazonaws.com/capacityType": "SPOT",
                    "kubernetes.azure.com/scalesetpriority": "spot", "karpenter.sh/capacity-type": "spot"}
# After SIGTERM, `ray start` (Ray 2.60) marks its node as draining for this long (default 30 s) before it stops;
# Kubernetes kills the pod at terminationGracePeriodSeconds (default 30 s).
DRAIN_VARIABLE = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
DEFAULT_DRAIN_S = "30"
DEFAULT_GRACE_S = 30
# The training workers jobs/train.py passes to `gan-dist train --num-workers` unless the entrypoint names them.
NUM_WORKERS_VARIABLE = "GAN_DIST_NUM_WORKERS"
NUM_WORKERS_FLAG = "--num-workers"
WORKER_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
# The CRDs are 2 MB of trusted data: the C parser (when built) loads them several times faster.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, as kubectl does (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_documents(text: str) -> list[dict]:
    """All non-empty documents of a multi-document YAML string."""
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]


# --- kustomize -------------------------------------------------------------------------------------------------


def render_kustomization(directory: Path) -> list[dict]:
    """What `kubectl kustomize DIRECTORY` prints, for the subset of kustomize that k8s/ uses."""
    (kustomization,) = load_documents((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    if unsupported:
        raise ValueError(f"{directory}/kustomization.yaml: unsupported fields {sorted(unsupported)}")
    resources = [obj for entry in kustomization.get("resources", []) for obj in _load_resource(directory / entry)]
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    for patch in kustomization.get("patches", []):
        _apply_patch(resources, patch)
    return resources


def _load_resource(path: Path) -> list[dict]:
    return render_kustomization(path) if path.is_dir() else load_documents(path.read_text())


def containers(node: Any) -> Iterator[dict]:
    """Every entry of a `containers` or `initContainers` list anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (item for item in value if isinstance(item, dict))
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def _split_image(image: str) -> tuple[str, str | None]:
    name, sep, tag = image.rpartition(":")
    # A colon before the last slash belongs to a registry port, not a tag.
    return (name, tag) if sep and "/" not in tag else (image, None)


def _set_image(resources: list[dict], image: dict) -> None:
    # Like kustomize's image transformer, this touches every container list, custom resources included.
    for container in containers(resources):
        name, tag = _split_image(container.get("image", ""))
        if name == image["name"]:
            new_tag = image.get("newTag", tag)
            new_name = image.get("newName", name)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _apply_patch(resources: list[dict], entry: dict) -> None:
    body = yaml.load(entry["patch"], Loader=StrictLoader)
    if isinstance(body, list):  # JSON6902: a list of operations on the resources named by `target`
        targets = _matching(resources, entry["target"]["kind"], entry["target"]["name"])
        for obj in targets:
            _json6902(obj, body)
    else:  # strategic merge: the patch names its own target
        (obj,) = _matching(resources, body["kind"], body["metadata"]["name"])
        _merge(obj, body)


def _matching(resources: list[dict], kind: str, name: str) -> list[dict]:
    found = [obj for obj in resources if obj["kind"] == kind and obj["metadata"]["name"] == name]
    if not found:
        raise ValueError(f"patch target {kind}/{name} is not among the resources")
    return found


def _json6902(obj: dict, operations: list[dict]) -> None:
    for operation in operations:
        parent, key = _pointer_parent(obj, operation["path"])
        current = parent[key]  # `test` and `replace` both require the location to exist
        if operation["op"] == "test":
            if current != operation["value"]:
                raise ValueError(f"patch test failed at {operation['path']}: {current!r} != {operation['value']!r}")
        elif operation["op"] == "replace":
            parent[key] = operation["value"]
        else:
            raise ValueError(f"unsupported JSON6902 op {operation['op']!r}")


def _pointer_parent(obj: Any, pointer: str) -> tuple[Any, Any]:
    keys = [part.replace("~1", "/").replace("~0", "~") for part in pointer.lstrip("/").split("/")]
    keys = [int(key) if key.isdigit() else key for key in keys]
    for key in keys[:-1]:
        obj = obj[key]
    return obj, keys[-1]


def _merge(target: dict, patch: dict) -> None:
    # Maps merge and everything else is replaced: enough for the ConfigMap patch in k8s/kustomization.yaml
    # (kustomize's list merge keys are not implemented).
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


# --- CRD schemas -----------------------------------------------------------------------------------------------


def load_crd_schema(path: Path) -> dict:
    """The v1 openAPIV3Schema of a CRD file, made strict: undeclared fields become errors."""
    crd = yaml.load(path.read_text(), Loader=_FAST_LOADER)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    _forbid_unknown_fields(schema)
    return schema


def _subschemas(schema: dict) -> Iterator[dict]:
    yield from schema.get("properties", {}).values()
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            yield schema[key]
    for key in ("allOf", "anyOf", "oneOf"):
        yield from schema.get(key, [])


def _forbid_unknown_fields(schema: dict) -> None:
    # The CRD never says additionalProperties: false, so plain jsonschema would accept any misspelled field.
    open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_ended:
        schema["additionalProperties"] = False
    for child in _subschemas(schema):
        _forbid_unknown_fields(child)


def fill_defaults(instance: Any, schema: dict) -> None:
    """Set schema defaults on the objects present in `instance`, as the API server does before checking it."""
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for name, subschema in properties.items():
            if name not in instance and "default" in subschema:
                instance[name] = copy.deepcopy(subschema["default"])
            if name in instance:
                fill_defaults(instance[name], subschema)
        if isinstance(schema.get("additionalProperties"), dict):
            for name, value in instance.items():
                if name not in properties:
                    fill_defaults(value, schema["additionalProperties"])
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"])


# --- validation ------------------------------------------------------------------------------------------------


class ManifestValidator:
    """Validates rendered manifests: Ray kinds against the strict CRD schemas plus KubeRay's runtime rules,
    everything else through kubernetes-validate."""

    def __init__(self, crd_directory: Path) -> None:
        self._schemas = {kind: load_crd_schema(crd_directory / file) for kind, file in CRD_FILES.items()}
        # The CRDs use no keyword whose meaning differs between OpenAPI 3.0 and draft 7.
        self._validators = {kind: jsonschema.Draft7Validator(s) for kind, s in self._schemas.items()}

    def errors(self, obj: dict) -> list[str]:
        """Every problem found in one manifest, each prefixed with `Kind/name:`; empty when it is valid."""
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("kind") in self._validators:
            # The runtime rules assume the types the schema guarantees, so they run on schema-valid objects only.
            problems = self._schema_errors(obj) or ray_runtime_errors(obj)
        else:
            problems = core_errors(obj) + _config_map_secret_errors(obj)
        return [f"{label}: {problem}" for problem in problems]

    def _schema_errors(self, obj: dict) -> list[str]:
        instance = copy.deepcopy(obj)
        fill_defaults(instance, self._schemas[obj["kind"]])
        errors = self._validators[obj["kind"]].iter_errors(instance)
        return sorted(f"{_where(error.absolute_path)}: {error.message}" for error in errors)


def _where(path: Any) -> str:
    return ".".join(str(part) for part in path) or "<root>"


def core_errors(obj: dict) -> list[str]:
    """Strict kubernetes-validate errors for a core kind (Secret, ConfigMap, ...)."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_where(error.absolute_path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [str(error)]
    return []


def ray_runtime_errors(obj: dict) -> list[str]:
    """The rules KubeRay checks only once the resource exists (the RayJob then ends ValidationFailed), plus
    secrets, GPU limits, drain timing and spot groups, which the schema cannot express."""
    problems = _rayjob_errors(obj) if obj["kind"] == "RayJob" else []
    cluster = cluster_spec(obj)
    if cluster:
        problems += (_ray_version_errors(cluster) + _replica_errors(cluster) + _drain_errors(cluster)
                     + spot_errors(cluster))
    for container in containers(obj):
        problems += _gpu_errors(container) + _literal_secret_errors(container)
    return problems


def cluster_spec(obj: dict) -> dict:
    """The RayCluster spec of a RayCluster, or the one a RayJob creates."""
    spec = obj.get("spec", {})
    return (spec.get("rayClusterSpec") if obj["kind"] == "RayJob" else spec) or {}


def pod_templates(cluster: dict) -> Iterator[tuple[str, dict | None, dict]]:
    """(what it is, its worker group or None for the head, its pod spec) for every pod template of a cluster."""
    yield "head", None, cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {})
    for group in cluster.get("workerGroupSpecs", []):
        yield f"worker group {group.get('groupName')}", group, group.get("template", {}).get("spec", {})


def _rayjob_errors(rayjob: dict) -> list[str]:
    spec = rayjob.get("spec", {})
    problems = []
    if len(rayjob.get("metadata", {}).get("name", "")) > MAX_RAYJOB_NAME:
        problems.append(f"metadata.name is longer than {MAX_RAYJOB_NAME} characters")
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        problems.append("spec.ttlSecondsAfterFinished must not be negative")
    if spec.get("ttlSecondsAfterFinished", 0) and not shutdown:
        problems.append("spec.ttlSecondsAfterFinished requires spec.shutdownAfterJobFinishes: true")
    if spec.get("suspend") and not shutdown:
        problems.append("spec.suspend requires spec.shutdownAfterJobFinishes: true")
    if bool(spec.get("rayClusterSpec")) == bool(spec.get("clusterSelector")):
        problems.append("spec needs exactly one of rayClusterSpec and clusterSelector")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        problems.append(f"spec.submissionMode {mode!r} is not one of {sorted(SUBMISSION_MODES)}")
    if "runtimeEnvYAML" in spec:
        problems += _runtime_env_errors(spec["runtimeEnvYAML"])
    return problems


def _runtime_env_errors(text: str) -> list[str]:
    try:
        runtime_env = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as error:
        return [f"spec.runtimeEnvYAML does not parse: {error}"]
    if not isinstance(runtime_env, dict):
        return ["spec.runtimeEnvYAML must be a mapping"]
    problems = []
    for name, value in (runtime_env.get("env_vars") or {}).items():
        if not isinstance(value, str):
            problems.append(f"spec.runtimeEnvYAML env_vars.{name} must be a string, got {value!r}")
        if SECRET_NAME.search(str(name)):
            problems.append(f"spec.runtimeEnvYAML env_vars.{name} looks like a secret: it is stored in plain text")
    return problems


def _ray_version_errors(cluster: dict) -> list[str]:
    problems = []
    for container in containers(cluster):
        match = RAY_IMAGE.match(container.get("image", ""))
        if not match:
            continue
        repository, version = match.groups()
        if repository == "ray-ml":
            problems.append(f"image {container['image']}: rayproject/ray-ml is no longer published")
        if version != cluster.get("rayVersion"):
            problems.append(f"rayVersion {cluster.get('rayVersion')!r} does not match image {container['image']}")
    return problems


def replica_bounds(group: dict) -> tuple[int, int]:
    """A worker group's (minReplicas, maxReplicas), defaulted as the CRD defaults them."""
    return group.get("minReplicas", 0), group.get("maxReplicas", MAX_REPLICAS_DEFAULT)


def _replica_errors(cluster: dict) -> list[str]:
    problems = []
    for group in cluster.get("workerGroupSpecs", []):
        low, high = replica_bounds(group)
        if low > high:
            problems.append(f"worker group {group.get('groupName')} has minReplicas {low} greater than maxReplicas "
                            f"{high}")
    return problems


def _drain_errors(cluster: dict) -> list[str]:
    # A drain that outlasts the grace period is cut off by SIGKILL: Ray never finishes stopping the node's processes.
    problems = []
    for name, _, pod in pod_templates(cluster):
        drains = [var["value"] for c in pod.get("containers", []) for var in c.get("env", [])
                  if var.get("name") == DRAIN_VARIABLE and "value" in var]
        if not drains and "terminationGracePeriodSeconds" not in pod:
            continue  # Ray's and Kubernetes' defaults, not a choice made here
        grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        for drain in drains or [DEFAULT_DRAIN_S]:
            if not re.fullmatch(r"\d+(\.\d+)?", drain):
                problems.append(f"{name}: {DRAIN_VARIABLE} {drain!r} is not a number of seconds")
            elif float(drain) >= grace:
                problems.append(f"{name}: {DRAIN_VARIABLE} ({drain} s) must end before terminationGracePeriodSeconds "
                                f"({grace} s)")
    return problems


def _gpu_errors(container: dict) -> list[str]:
    resources = container.get("resources", {})
    requested = resources.get("requests", {}).get(GPU_RESOURCE)
    limit = resources.get("limits", {}).get(GPU_RESOURCE)
    name = container.get("name")
    # KubeRay reads Ray's GPU count from limits only, and Kubernetes requires extended-resource requests == limits.
    if requested is not None and limit is None:
        return [f"container {name}: {GPU_RESOURCE} requested without a limit"]
    if requested is not None and str(requested) != str(limit):
        return [f"container {name}: {GPU_RESOURCE} requests ({requested}) differ from limits ({limit})"]
    return []


def _literal_secret_errors(container: dict) -> list[str]:
    return [
        f"container {container.get('name')}: env {var.get('name')} has a literal value; use valueFrom.secretKeyRef"
        for var in container.get("env", [])
        if "value" in var and SECRET_NAME.search(var.get("name", ""))
    ]


def _config_map_secret_errors(obj: dict) -> list[str]:
    if obj.get("kind") != "ConfigMap":
        return []
    return [f"data.{key} looks like a secret: a ConfigMap is stored and shown in plain text; use a Secret"
            for key in obj.get("data", {}) if SECRET_NAME.search(key)]


# --- spot worker groups ----------------------------------------------------------------------------------------


def spot_groups(cluster: dict) -> list[dict]:
    """The worker groups whose pods require spot nodes."""
    return [group for _, group, pod in pod_templates(cluster) if group is not None and _requires_spot(pod)]


def spot_errors(cluster: dict) -> list[str]:
    """A spot group must tolerate every cloud's spot taint, start at its minReplicas and, to grow, have the
    autoscaler; beside it, the head and the other groups must be kept off spot nodes (the head's loss ends the run,
    the other groups are the floor the run counts on)."""
    spot = spot_groups(cluster)
    if not spot:
        return []
    problems = []
    for name, group, pod in pod_templates(cluster):
        if any(group is g for g in spot):
            problems += [f"{name} runs on spot nodes but does not tolerate the taint {key}={value}:NoSchedule"
                         for key, value in SPOT_NODE_LABELS.items() if not _tolerates(pod, key, value)]
            low, high = replica_bounds(group)
            if group.get("replicas", 0) > low:
                problems.append(f"{name} starts with replicas {group['replicas']}, above its minReplicas {low}: a "
                                "RayJob starts only once every starting pod runs, so it would wait for spot capacity")
            if low < high and not cluster.get("enableInTreeAutoscaling"):
                # Without the autoscaler KubeRay keeps `replicas` pods: the group would never grow or be refilled.
                problems.append(f"{name} can grow from {low} to {high} pods only with enableInTreeAutoscaling: true")
        else:
            problems += [f"{name} may land on spot nodes beside a spot group: no required node affinity excludes "
                         f"{key}={value}" for key, value in SPOT_NODE_LABELS.items() if not _avoids(pod, key, value)]
    return problems


def _required_terms(pod: dict) -> list[list[dict]]:
    """The match expressions of each required node-selector term (the terms are alternatives)."""
    affinity = pod.get("affinity", {}).get("nodeAffinity", {})
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    return [term.get("matchExpressions", []) for term in terms]


def _requires_spot(pod: dict) -> bool:
    def spot_only(expression: dict) -> bool:
        key = expression.get("key")
        return (key in SPOT_NODE_LABELS and expression.get("operator") == "In"
                and set(expression.get("values", [])) == {SPOT_NODE_LABELS[key]})

    selector = pod.get("nodeSelector", {})
    terms = _required_terms(pod)
    return (any(selector.get(key) == value for key, value in SPOT_NODE_LABELS.items())
            or bool(terms) and all(any(spot_only(e) for e in term) for term in terms))


def _avoids(pod: dict, key: str, value: str) -> bool:
    def excludes(expression: dict) -> bool:
        return expression.get("key") == key and (
            expression.get("operator") == "DoesNotExist"
            or expression.get("operator") == "NotIn" and value in expression.get("values", []))

    terms = _required_terms(pod)
    return bool(terms) and all(any(excludes(e) for e in term) for term in terms)


def _tolerates(pod: dict, key: str, value: str) -> bool:
    def matches(toleration: dict) -> bool:
        if toleration.get("effect") not in (None, "", "NoSchedule"):
            return False
        if toleration.get("operator") == "Exists":
            return toleration.get("key") in (None, "", key)
        return toleration.get("key") == key and toleration.get("value") == value

    return any(matches(toleration) for toleration in pod.get("tolerations", []))


# --- the training worker range ---------------------------------------------------------------------------------


def worker_range_errors(resources: list[dict]) -> list[str]:
    """Each Ray workload's training workers (its entrypoint's --num-workers, else GAN_DIST_NUM_WORKERS as the job
    driver on the head sees it: N or MIN-MAX) against its worker groups: MIN must be the pods the cluster keeps (the
    sum of minReplicas) and MAX the most it may hold (the sum of maxReplicas). A MIN above the floor waits for pods
    that may never come; a MAX out of reach trains every worker with a larger share of the global batch for good;
    either one lower leaves GPUs idle."""
    maps = config_maps(resources)
    problems = []
    for obj in (o for o in resources if o["kind"] in CRD_FILES):
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        values = {environment(container, maps).get(NUM_WORKERS_VARIABLE) for container in containers(obj)}
        if len(values) > 1:
            problems.append(f"{label}: its pods disagree on {NUM_WORKERS_VARIABLE}: {sorted(map(str, values))}")
            continue
        tokens = shlex.split(obj["spec"].get("entrypoint", ""))
        given = tokens[tokens.index(NUM_WORKERS_FLAG) + 1] if NUM_WORKERS_FLAG in tokens[:-1] else values.pop()
        match = WORKER_RANGE.fullmatch(given or "")
        if not match:
            problems.append(f"{label}: training workers {given!r} are not N or MIN-MAX (set {NUM_WORKERS_VARIABLE} "
                            f"or the entrypoint's {NUM_WORKERS_FLAG})")
            continue
        wanted = (int(match[1]), int(match[2] or match[1]))
        bounds = [replica_bounds(group) for group in cluster_spec(obj).get("workerGroupSpecs", [])]
        held = (sum(low for low, _ in bounds), sum(high for _, high in bounds))
        if wanted != held:
            problems.append(f"{label}: training workers {given} but the worker groups hold {held[0]}-{held[1]} pods "
                            "(minReplicas-maxReplicas, summed): make them agree")
    return problems


def config_maps(resources: list[dict]) -> dict[str, dict]:
    """The data of each ConfigMap among the resources, by name."""
    return {obj["metadata"]["name"]: obj.get("data", {}) for obj in resources if obj["kind"] == "ConfigMap"}


def environment(container: dict, maps: dict[str, dict]) -> dict[str, str]:
    """The variables a container gets written out or from one of `maps` (those from Secrets are left out)."""
    values = {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        value = var.get("value") if ref is None else maps.get(ref.get("name"), {}).get(ref.get("key"))
        if value is not None:
            values[var["name"]] = value
    return values
