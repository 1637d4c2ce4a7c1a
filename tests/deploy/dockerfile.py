"""Replays the Dockerfile's builder stage on this machine: the tests' stand-in for `docker build`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# NOTE: the builder stage may use only these; anything else would make the replay diverge from the image.
REPLAYED = frozenset({"FROM", "ENV", "WORKDIR", "COPY", "RUN"})


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction (continuation lines joined, comments dropped)."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """One build stage: its base image, its name and its instructions after FROM."""

    image: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every instruction with this keyword."""
        return [ins.args for ins in self.instructions if ins.keyword == keyword]


def parse(path: Path) -> list[Stage]:
    """Splits a Dockerfile into stages."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        keyword, _, args = text.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(image=words[0], name=name))
        elif not stages:
            raise ValueError(f"{path}:{start}: {ins.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(ins)
    return stages


class DockerIgnore:
    """The exclusion rules of a .dockerignore file (last matching pattern wins, `!` re-includes)."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        if not path.is_file():
            return
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:] if negated else line
            self.rules.append((negated, re.compile(_translate(pattern.strip("/")))))

    def excluded(self, relative: str) -> bool:
        """Whether a context-relative path is left out of the build context."""
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negated, regex in self.rules:
            # NOTE: like Docker, a pattern that matches a parent folder matches everything inside it.
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                result = not negated
        return result


def _translate(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@dataclass
class Replay:
    """Runs a builder stage's ENV, WORKDIR, COPY and RUN lines with container paths mapped to host paths.

    Attributes:
        context: The build context (the repository).
        path_map: Container path → host path (e.g. "/opt/corral" → a temporary venv folder).
        env: The environment RUN commands start from; the stage's ENV lines are applied on top.
        overrides: Variables set after the stage's ENV lines (e.g. where pip finds wheels).
    """

    context: Path
    path_map: Mapping[str, Path]
    env: dict[str, str]
    overrides: Mapping[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def host_path(self, container_path: str, workdir: Path | None) -> Path:
        """Maps a container path to the host (relative paths are under the current WORKDIR)."""
        if not container_path.startswith("/"):
            if workdir is None:
                raise ValueError(f"relative path {container_path!r} before WORKDIR")
            return workdir / container_path
        for prefix, host in sorted(self.path_map.items(), key=lambda item: -len(item[0])):
            if container_path == prefix or container_path.startswith(prefix.rstrip("/") + "/"):
                return host / container_path[len(prefix) :].lstrip("/")
        raise ValueError(f"container path {container_path!r} has no host mapping")

    def run(self, stage: Stage) -> None:
        """Replays the stage; raises on an instruction the replay does not support."""
        ignore = DockerIgnore(self.context / ".dockerignore")
        env = dict(self.env)
        workdir: Path | None = None
        for ins in stage.instructions:
            if ins.keyword not in REPLAYED:
                raise ValueError(f"line {ins.line}: {ins.keyword} is not replayed; keep the builder simple")
            if ins.keyword == "ENV":
                for pair in shlex.split(ins.args):
                    key, _, value = pair.partition("=")
                    value = _expand(value, env)
                    env[key] = str(self.host_path(value, workdir)) if value in self.path_map else value
                env.update(self.overrides)
            elif ins.keyword == "WORKDIR":
                workdir = self.host_path(ins.args, workdir)
                workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                self._copy(ins, workdir, ignore)
            elif ins.keyword == "RUN":
                if ins.args.startswith("["):
                    raise ValueError(f"line {ins.line}: exec-form RUN is not replayed")
                self.log.append(f"RUN {ins.args}")
                done = subprocess.run(
                    ["sh", "-c", ins.args], cwd=workdir, env=env, capture_output=True, text=True, check=False
                )
                if done.returncode != 0:
                    raise RuntimeError(
                        f"line {ins.line}: RUN failed ({done.returncode}):\n{done.stdout[-4000:]}"
                        f"\n{done.stderr[-4000:]}"
                    )

    def _copy(self, ins: Instruction, workdir: Path | None, ignore: DockerIgnore) -> None:
        words = shlex.split(ins.args)
        if any(word.startswith("--") for word in words) or len(words) < 2:
            raise ValueError(f"line {ins.line}: only `COPY src... dest` from the context is replayed")
        *sources, dest = words
        target = self.host_path(dest, workdir)
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            if any(ch in source for ch in "*?["):
                raise ValueError(f"line {ins.line}: wildcards in COPY are not replayed")
            origin = self.context / source
            if ignore.excluded(source.strip("/")) and not origin.is_dir():
                raise ValueError(f"line {ins.line}: {source} is excluded by .dockerignore")
            if origin.is_dir():
                for file in sorted(p for p in origin.rglob("*") if p.is_file()):
                    relative = file.relative_to(self.context).as_posix()
                    if not ignore.excluded(relative):
                        _copy_file(file, target / file.relative_to(origin))
            elif origin.is_file():
                _copy_file(origin, target / origin.name if into_dir else target)
            else:
                raise ValueError(f"line {ins.line}: {source} not found in the build context")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Substitutes $VAR and ${VAR} from the build environment, as Docker does in ENV values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _copy_file(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest)
