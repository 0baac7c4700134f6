"""Offline checks for the manifests in k8s/: a small kustomize renderer (only the features k8s/ uses), strict
validation of RayJob/RayCluster against the KubeRay CRD schemas, the rules KubeRay only checks at runtime, and
core kinds (Secret, ConfigMap) through kubernetes-validate. Used by tests/test_k8s_manifests.py."""

from __future__ import annotations

import copy
import re
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
            problems = core_errors(obj)
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
    secrets and GPU limits, which the schema cannot express."""
    spec = obj.get("spec", {})
    problems = _rayjob_errors(obj) if obj["kind"] == "RayJob" else []
    cluster = spec.get("rayClusterSpec") if obj["kind"] == "RayJob" else spec
    if cluster:
        problems += _ray_version_errors(cluster)
    for container in containers(obj):
        problems += _gpu_errors(container) + _literal_secret_errors(container)
    return problems


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
