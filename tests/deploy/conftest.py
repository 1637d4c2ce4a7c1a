"""The deployment tests' inputs: the example overlay rendered, and the image's Python environment
(built once per session, by replaying the Dockerfile)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.dockerfile import Replay, Stage, parse
from tests.deploy.render import EXAMPLE_OVERLAY, copy_kubernetes, kustomize
from tests.helpers.procs import ROOT

# NOTE: the container paths of the image's venv and build folder; the replay maps them to temp folders.
IMAGE_VENV = "/opt/corral"
IMAGE_SRC = "/src"


@dataclass(frozen=True)
class ImageEnv:
    """The replayed image environment.

    Attributes:
        venv: The virtual environment, built as the Dockerfile builds /opt/corral.
        python: Its interpreter (the image's `python` on PATH).
        workdir: An empty folder to run from, like the image's WORKDIR (nothing importable in it).
        builder: The Dockerfile's builder stage.
        final: The Dockerfile's final stage.
    """

    venv: Path
    python: Path
    workdir: Path
    builder: Stage
    final: Stage


def wheelhouse() -> Path:
    """A folder of downloaded wheels kept between sessions ($CORRAL_WHEELHOUSE overrides it)."""
    default = Path.home() / ".cache" / "corral" / "wheelhouse"
    return Path(os.environ.get("CORRAL_WHEELHOUSE", str(default)))


def _missing_wheels(folder: Path) -> bool:
    """Whether some locked package (or the build backend) has no wheel in the folder yet."""
    have = {tuple(p.name.split("-")[:2]) for p in folder.glob("*.whl")}
    have_names = {name for name, _ in have}
    lock = (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split("==") for line in lock if line and not line.startswith("#")]
    wanted = {(re.sub(r"[-_.]+", "_", name).lower(), version) for name, version in pins}
    have_lower = {(name.lower(), version) for name, version in have}
    return not wanted <= have_lower or "setuptools" not in have_names


def _fill_wheelhouse(folder: Path) -> None:
    """Downloads the lock's wheels and the build backend, unless they are all there already."""
    folder.mkdir(parents=True, exist_ok=True)
    if not _missing_wheels(folder):
        return
    with (ROOT / "pyproject.toml").open("rb") as handle:
        build_requires = tomllib.load(handle)["build-system"]["requires"]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(folder)]
    for extra in (["--no-deps", "-r", str(ROOT / "requirements" / "runtime.txt")], build_requires):
        done = subprocess.run([*pip, *extra], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageEnv]:
    """The image's venv, built by replaying the builder stage (same files, same commands, same flags).

    Pip reads wheels from a local wheelhouse (filled from PyPI on first use) instead of the index: the
    only difference from `docker build`, and one that changes where packages come from, not which.
    """
    stages = parse(ROOT / "Dockerfile")
    builder = next(stage for stage in stages if stage.name == "builder")
    root = tmp_path_factory.mktemp("image")
    shim = root / "bin"
    shim.mkdir()
    # NOTE: the image's `python` is the base interpreter, not a venv; so is the one the shim points at.
    base_python = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    for name in ("python", "python3"):
        (shim / name).symlink_to(base_python)
    houses = wheelhouse()
    _fill_wheelhouse(houses)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CORRAL_", "PIP_")) and k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    replay = Replay(
        context=ROOT,
        path_map={IMAGE_VENV: root / "opt-corral", IMAGE_SRC: root / "src"},
        env=env,
        overrides={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(houses)},
    )
    replay.run(builder)
    venv = root / "opt-corral"
    workdir = root / "app"
    workdir.mkdir()
    yield ImageEnv(
        venv=venv, python=venv / "bin" / "python", workdir=workdir, builder=builder, final=stages[-1]
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The example overlay as `kubectl kustomize` renders it, its `*.example` placeholder secrets in place."""
    return kustomize(copy_kubernetes(tmp_path_factory.mktemp("k8s")) / EXAMPLE_OVERLAY)
