"""The smaller promises of the deployment files: a re-appliable pull Job, a headless Service for every
StatefulSet, compose's pull that cannot block prewarm, one dashboard for both, and a Dockerfile whose
notes name files that exist."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.render import (
    EXAMPLE_OVERLAY,
    by_kind,
    compose_config,
    compose_shell,
    copy_kubernetes,
    kustomize,
    pod_templates,
)
from tests.helpers.procs import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "corral.json"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
CORRAL_SERVICES = ("router", "cache", "health", "prewarm")


def test_every_statefulset_is_governed_by_a_headless_service(rendered: list[dict[str, Any]]) -> None:
    services = by_kind(rendered, "Service")
    statefulsets = by_kind(rendered, "StatefulSet")
    assert {"ollama", "postgres"} <= set(statefulsets)
    for name, statefulset in statefulsets.items():
        service = services[statefulset["spec"]["serviceName"]]["spec"]
        assert service.get("clusterIP") == "None", name
        labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in service["selector"].items()), name


def test_pull_job_is_bounded_and_survives_a_change_of_its_lists(tmp_path: Path) -> None:
    copy = copy_kubernetes(tmp_path)
    before = kustomize(copy / EXAMPLE_OVERLAY)
    job = by_kind(before, "Job")["ollama-pull"]
    spec = job["spec"]
    assert 0 < spec["activeDeadlineSeconds"] <= 4 * 3600
    assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
    container = spec["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "ollama-pull"}}]
    assert "env" not in container, "the lists live in the ConfigMap, not in the Job's template"
    # A new model in the list changes the ConfigMap only: the Job, whose template cannot change while it
    # exists, renders byte for byte the same, so `kubectl apply -k` goes through.
    manifest = copy / "base" / "ollama.yaml"
    docs = list(yaml.safe_load_all(manifest.read_text(encoding="utf-8")))
    pull = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ollama-pull")
    pull["data"]["OLLAMA_PULL_MODELS"] += " qwen2.5:0.5b"
    manifest.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    after = kustomize(copy / EXAMPLE_OVERLAY)
    assert by_kind(after, "Job")["ollama-pull"] == job
    assert by_kind(after, "ConfigMap")["ollama-pull"] != by_kind(before, "ConfigMap")["ollama-pull"]


def test_compose_pull_failure_does_not_keep_prewarm_from_starting(tmp_path: Path) -> None:
    services = compose_config()["services"]
    assert services["prewarm"]["depends_on"]["ollama-pull"]["condition"] == "service_completed_successfully"
    pull = services["ollama-pull"]
    assert pull["entrypoint"] == ["/bin/sh", "-ec"]
    script = compose_shell(pull["command"][0])
    # A stand-in `ollama`: nothing is there yet, and pulling the second model fails.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ollama"
    fake.write_text(
        '#!/bin/sh\ncase "$1 $2" in "show "*) exit 1 ;; "pull m2") echo "pull failed" >&2; exit 1 ;; esac\n',
        encoding="utf-8",
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-ec", script],
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OLLAMA_PULL_MODELS": "m1 m2"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "FAILED: ollama-1/m2 ollama-2/m2 ollama-3/m2 ollama-4/m2" in done.stderr
    assert done.stdout.count("pulling m1") == 4


def test_dashboard_selects_corral_processes_on_compose_and_kubernetes(rendered: list[dict[str, Any]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    process = [e for e in exprs if "process_" in e]
    assert process
    for expr in process:
        assert 'app_kubernetes_io_part_of="corral"' in expr and "job=" not in expr, expr
    # compose: the static scrape targets carry the labels ...
    jobs = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))["scrape_configs"]
    for job in jobs:
        (static,) = job["static_configs"]
        assert static["labels"]["app_kubernetes_io_part_of"] == "corral"
        assert static["labels"]["app_kubernetes_io_name"] == job["job_name"].removeprefix("corral-")
    # ... and on Kubernetes every scraped pod has the pod labels a pod scrape maps to them.
    for template in pod_templates(rendered).values():
        labels = template["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/part-of") == "corral", labels
        if template["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true":
            assert labels["app.kubernetes.io/name"] in CORRAL_SERVICES


def test_dockerfile_names_only_files_that_exist() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    named = set(re.findall(r"\b((?:tests|scripts|services|deploy|docs)/[\w./-]+\.(?:py|md|sh|yaml))", text))
    assert named, "the Dockerfile's notes name the test that replays it"
    assert [path for path in sorted(named) if not (ROOT / path).exists()] == []
