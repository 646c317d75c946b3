"""The container image and Kubernetes manifests in deploy/, checked offline: every manifest
against the Kubernetes schemas (kubernetes-validate, strict), the settings a deployment
relies on (non-root, probes on bantam's health routes, autoscaling on queue depth, a
disruption budget, the router in front with its routes and ledger), the routes file the
router mounts read by bantam itself, and every bantam command line in them accepted by
the binary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, bantam_binary

DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def docs():
    for m in MANIFESTS:
        for d in yaml.safe_load_all(m.read_text()):
            if d:
                yield d


def test_manifests_match_the_kubernetes_schemas():
    assert MANIFESTS
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *map(str, MANIFESTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_deployments_run_bantam_as_a_non_root_user_with_probes_and_autoscaling():
    by_kind: dict[str, list] = {}
    for d in docs():
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {"bantam", "bantam-router"}
    for d in deployments.values():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"]:
            assert c["readinessProbe"]["httpGet"]["path"] == "/health"
            assert c["livenessProbe"]["httpGet"]["path"] == "/"
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert any(v["mountPath"] == "/models" for v in c["volumeMounts"])
        # The model is pulled into the volume before the server starts.
        assert pod["initContainers"][0]["args"][0] == "pull"
    router = deployments["bantam-router"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--routes" in router and "--ledger" in router
    hpa = by_kind["HorizontalPodAutoscaler"][0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "bantam"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "bantam_queue_depth"
    assert by_kind["PodDisruptionBudget"][0]["spec"]["minAvailable"] >= 1


def test_command_lines_and_routes_are_bantams(tmp_path):
    for d in docs():
        if d["kind"] == "ConfigMap":
            routes = tmp_path / "routes.toml"
            routes.write_text(d["data"]["routes.toml"])
            r = subprocess.run([str(bantam_binary()), "route", "check", str(routes)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert "1 upstreams, 1 routes" in r.stdout
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            for c in pod["initContainers"] + pod["containers"]:
                r = subprocess.run([str(bantam_binary()), *c["args"], "--help"], capture_output=True, text=True)
                assert r.returncode == 0, (c["args"], r.stderr)
    text = (DEPLOY / "Dockerfile").read_text()
    stages = [l for l in text.splitlines() if l.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in stages[0], "a build stage and a small run stage"
    assert "USER 10001" in text and 'VOLUME ["/models"]' in text and "BANTAM_MODELS=/models" in text
    assert "cargo build --release --locked -p bantam" in text
