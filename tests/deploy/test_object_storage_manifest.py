"""deploy/kuberay/rayjob-object-storage.yaml: valid against KubeRay's CRD like the other manifests, a real
vidpeft command, and no shared volume anywhere: data and checkpoints are URIs, credentials from Secrets."""

from __future__ import annotations

import shlex

import yaml

from tests.deploy.test_deploy_manifests import DEPLOY, ROOT, crd_validator, ray_containers

NAME = "rayjob-object-storage.yaml"


def test_validates_against_the_kuberay_crd():
    manifest = yaml.safe_load((DEPLOY / "kuberay" / NAME).read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in crd_validator(manifest, "ray.io_rayjobs.yaml").iter_errors(manifest)]
    assert not errors, "\n".join(errors)


def test_object_storage_only():
    from pipelines.cli import build_parser
    from pipelines.cli.args import load_experiment

    manifest = yaml.safe_load((DEPLOY / "kuberay" / NAME).read_text())
    argv = shlex.split(manifest["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[1:])
    cfg = load_experiment([str(ROOT / f.removeprefix("/app/")) for f in args.config], args.overrides)
    assert args.resume and cfg.data.manifest.startswith("s3://") and cfg.data.cache_dir
    spec = manifest["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for g in groups:  # no volume shared between pods: no PVC
        assert all("persistentVolumeClaim" not in v for v in g["template"]["spec"].get("volumes", []))
    for c in ray_containers(manifest):
        env = {e["name"]: e for e in c["env"]}
        assert env["VIDPEFT_STORAGE_PATH"]["value"].startswith("s3://")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["optional"]
    cache_mounts = [m["mountPath"] for c in ray_containers(manifest)[1:] for m in c["volumeMounts"]]
    assert any(cfg.data.cache_dir.startswith(m) for m in cache_mounts)
