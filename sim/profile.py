"""Fleet profiles: YAML files describing several nodes (ports, models, cost model, faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.config import BUILTIN_MODELS, ModelSpec, NodeConfig, normalize_model_name

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A profile file is missing or invalid; the message names the file and the field."""


class NodeEntry(BaseModel):
    """A node of a profile: its config plus where it listens."""

    model_config = ConfigDict(extra="forbid")

    config: NodeConfig
    port: int | None = None
    admin_port: int | None = None


class Profile(BaseModel):
    """A parsed profile."""

    model_config = ConfigDict(extra="forbid")

    name: str = "fleet"
    host: str = "127.0.0.1"
    base_port: int = Field(default=11434, ge=0, le=65535)
    nodes: list[NodeEntry]


def _resolve_models(items: Any, catalog: dict[str, ModelSpec], where: str) -> Any:
    if not isinstance(items, list):
        return items
    resolved = []
    for item in items:
        if isinstance(item, str):
            spec = catalog.get(normalize_model_name(item))
            if spec is None:
                raise ProfileError(f"{where}: unknown model {item!r} (add it under catalog:)")
            resolved.append(spec)
        else:
            resolved.append(item)
    return resolved


def parse_profile(raw: Any, source: str = "<profile>") -> Profile:
    """Validate a profile's YAML content.

    Raises:
        ProfileError: naming the source and the offending field.
    """
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: expected a mapping with a 'nodes' list")
    unknown = set(raw) - {"name", "host", "base_port", "defaults", "catalog", "nodes"}
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {sorted(unknown)}")
    try:
        extra = [ModelSpec.model_validate(m) for m in raw.get("catalog") or []]
    except ValidationError as exc:
        raise ProfileError(f"{source}: catalog: {_first_error(exc)}") from None
    catalog = dict(BUILTIN_MODELS)
    catalog.update({m.key: m for m in extra})
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ProfileError(f"{source}: defaults: expected a mapping")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ProfileError(f"{source}: nodes: expected a non-empty list")
    entries = []
    for index, node_raw in enumerate(nodes_raw):
        if not isinstance(node_raw, dict):
            raise ProfileError(f"{source}: nodes[{index}]: expected a mapping")
        merged = {**defaults, **node_raw}
        port = merged.pop("port", None)
        admin_port = merged.pop("admin_port", None)
        merged.setdefault("name", f"node-{index}")
        merged["catalog"] = list(catalog.values())
        if "models" in merged:
            merged["models"] = _resolve_models(merged["models"], catalog, f"{source}: nodes[{index}].models")
        try:
            config = NodeConfig.model_validate(merged)
        except ValidationError as exc:
            raise ProfileError(f"{source}: nodes[{index}].{_first_error(exc)}") from None
        entries.append(NodeEntry(config=config, port=port, admin_port=admin_port))
    try:
        return Profile(
            name=raw.get("name", "fleet"),
            host=raw.get("host", "127.0.0.1"),
            base_port=raw.get("base_port", 11434),
            nodes=entries,
        )
    except ValidationError as exc:
        raise ProfileError(f"{source}: {_first_error(exc)}") from None


def load_profile(path: str | Path) -> Profile:
    """Load a profile from a file path, or a bundled profile by name (`original-cluster`, `test`).

    Raises:
        ProfileError: the file is missing or invalid.
    """
    candidate = Path(path)
    if not candidate.exists() and not candidate.suffix:
        candidate = PROFILES_DIR / f"{path}.yaml"
    try:
        text = candidate.read_text()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{candidate}: invalid YAML: {exc}") from None
    return parse_profile(raw, str(candidate))


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return f"{field}: {first['msg']}"
