"""deploy/ checked without a cluster: the KubeRay manifests against KubeRay's CRD schemas (strictly, so a
misspelled field fails as `kubectl apply --validate=strict` would), the launcher YAML against Ray's
own schema, the entrypoints against the real CLI and config, the Dockerfile's shape, and the safe
defaults (loopback dashboard, token auth, no secrets in plain text, no unpickling)."""

from __future__ import annotations

import ast
import copy
import functools
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.shared_paths import require_shared

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The CRD schemas ship in shared/ beside the checkout (as in CI); VIDPEFT_KUBERAY_CRDS points elsewhere.
CRDS = Path(os.environ.get("VIDPEFT_KUBERAY_CRDS", ROOT.parent / "shared" / "kuberay-crds"))
MANIFESTS = {"rayjob.yaml": "ray.io_rayjobs.yaml", "raycluster.yaml": "ray.io_rayclusters.yaml"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / name).read_text())


def strict(schema):
    """Close every object schema that lists its properties (as the API server's strict field validation does)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def load_crd(crd_file: str) -> dict:
    # the CRDs are megabytes of YAML: the C loader, once per file
    return yaml.load((CRDS / crd_file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def crd_validator(manifest: dict, crd_file: str) -> jsonschema.Validator:
    # absent schemas: a skip with the reason in a plain clone, a failure under CI=true
    require_shared(CRDS, "KubeRay CRD schemas", env="VIDPEFT_KUBERAY_CRDS")
    crd = load_crd(crd_file)
    group, version = manifest["apiVersion"].split("/")
    assert group == crd["spec"]["group"] and manifest["kind"] == crd["spec"]["names"]["kind"]
    (schema,) = [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(strict(schema))


def ray_containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_validates_against_kuberay_crd(name):
    manifest = load(name)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in crd_validator(manifest, MANIFESTS[name]).iter_errors(manifest)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_crd_validation_catches_mistakes(name):
    """The check above can fail: a misspelled field, a wrong type and a missing head are each rejected."""
    manifest = load(name)
    validator = crd_validator(manifest, MANIFESTS[name])
    cluster = lambda m: m["spec"].get("rayClusterSpec", m["spec"])  # noqa: E731
    typo, wrong_type, no_head = (copy.deepcopy(manifest) for _ in range(3))
    cluster(typo)["workerGroupSpec"] = cluster(typo).pop("workerGroupSpecs")
    cluster(wrong_type)["workerGroupSpecs"][0]["replicas"] = "two"
    del cluster(no_head)["headGroupSpec"]
    for bad in (typo, wrong_type, no_head):
        assert list(validator.iter_errors(bad)), bad


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_cluster_settings(name):
    manifest = load(name)
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    # the Ray version pinned by pyproject.toml and the image built from this project's version
    (ray_req,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray[")]
    pinned = re.search(r">=\s*(\d+\.\d+)", ray_req).group(1)
    assert spec["rayVersion"].startswith(pinned + "."), (spec["rayVersion"], ray_req)
    images = {c["image"] for c in ray_containers(manifest)}
    assert len(images) == 1 and images.pop().endswith(f"/vidpeft:{PYPROJECT['project']['version']}")
    # token auth on; the head's services stay inside the cluster
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    # a GPU worker group
    workers = [c for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1 for c in workers)
    for c in ray_containers(manifest):
        env = {e["name"]: e for e in c.get("env", [])}
        # runs read where to log and where to keep checkpoints from the environment
        assert env["MLFLOW_TRACKING_URI"]["value"] and env["VIDPEFT_STORAGE_PATH"]["value"]
        for key, e in env.items():
            if re.search("PASSWORD|TOKEN|SECRET", key):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"{name}: {key} in plain text"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/dev/shm" in mounts  # object store in memory, not spilled to disk


def test_rayjob_entrypoint_is_a_valid_vidpeft_command():
    """The manifest's command parses with the real CLI and every --set key exists in the config."""
    from pipelines.cli import build_parser
    from pipelines.cli.args import load_experiment

    job = load("rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "vidpeft"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "train" and args.resume
    files = [str(ROOT / f.removeprefix("/app/")) for f in args.config]  # /app is the checkout in the image
    cfg = load_experiment(files, args.overrides)
    assert cfg.scaling.use_gpu in ("auto", "true") and cfg.scaling.num_workers > 1 and cfg.scaling.max_failures >= 1
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["env_vars"].items() <= default_runtime_env()["env_vars"].items()


def default_runtime_env() -> dict:
    return yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())


def test_runtime_env_file():
    from ray.runtime_env import RuntimeEnv

    spec = default_runtime_env()
    RuntimeEnv(**spec)  # Ray's own validation of the fields
    assert all(isinstance(v, str) for v in spec["env_vars"].values())
    assert not [k for k in spec["env_vars"] if re.search("PASSWORD|TOKEN|SECRET", k)]
    assert {".venv/", ".git/", "runs/", "mlflow.db"} <= set(spec["excludes"])


def test_cluster_launcher_config():
    import ray.autoscaler

    config = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd
    assert config["docker"]["image"] == ray_containers(load("raycluster.yaml"))[0]["image"]
    assert any("shm-size" in o for o in config["docker"]["run_options"])


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in joined.splitlines() if ln.strip()]


def test_dockerfile():
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    (base,) = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a) for op, a in steps if op == "FROM"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?(runtime|devel)-ubuntu\d\d\.\d\d", base), base
    copied = set()
    for op, a in steps:
        if op == "COPY":
            parts = [p for p in shlex.split(a) if not p.startswith("--")]
            for src in parts[:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which the checkout lacks"
                copied.add(src)
    # the project's packages and its packaging are in the image, and it is installed from them
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", *packages} <= copied
    runs = " ".join(a for op, a in steps if op == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", runs) and "ray.__version__" in runs
    users = [a for op, a in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    # the build context filter lets through what is copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert all(f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignore} for src in copied)


def test_no_unpickling_of_files():
    """Weights and states are safetensors or torch files read with weights_only=True; nothing else unpickles."""
    bad = []
    for path in sorted((ROOT / "components").rglob("*.py")) + sorted((ROOT / "pipelines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load" and kwargs.get("weights_only") != "True":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} torch.load without weights_only=True")
            if name.endswith(("pickle.load", "pickle.loads")) or kwargs.get("allow_pickle") == "True":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not bad, "\n".join(bad)


def test_documented_mlflow_servers_bind_loopback():
    """Every MLflow server or UI the docs tell a user to start listens on 127.0.0.1, unless it has auth on."""
    found = 0
    for doc in (ROOT / "README.md", DEPLOY / "README.md"):
        text = doc.read_text().replace("\\\n", " ")  # join continued shell lines
        for cmd in re.findall(r"mlflow (?:ui|server)\b[^\n`]*", text):
            found += 1
            assert "--host 127.0.0.1" in cmd or "--app-name basic-auth" in cmd, (doc.name, cmd)
    assert found
