"""The node registry: validated node specs, probe state and the models each node has."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._/-]{1,63}$")
MAX_LABEL_VALUE_CHARS = 256
MAX_LABELS = 32


class HealthError(Exception):
    """Base of the health domain's errors (the servicer maps each to a gRPC status)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidField(HealthError):
    """A value is malformed; `field` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.detail = message


class UnknownNode(HealthError):
    """No node has this id."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id!r} is not registered")
        self.node_id = node_id


class DuplicateNode(HealthError):
    """A node with this id or address is registered already."""


def validate_node_id(node_id: str) -> str:
    """Returns the id, or raises ValueError when it is not 1-64 of letters, digits, ".", "_", "-"."""
    if not NODE_ID_PATTERN.match(node_id):
        raise ValueError(
            f"{node_id!r} is not a valid node id (1-64 characters of letters, digits, '.', '_', '-')"
        )
    return node_id


def validate_address(address: str) -> str:
    """Returns the normalised base URL (no trailing slash), or raises ValueError naming the problem."""
    text = address.strip()
    if not text:
        raise ValueError("address is required, e.g. http://127.0.0.1:11434")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{address!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{address!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{address!r} has no host")
    if port is None:
        raise ValueError(f"{address!r} has no port, e.g. http://127.0.0.1:11434")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{address!r} must be only scheme://host:port")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Returns the labels as a dict, or raises ValueError naming the bad key."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not _LABEL_KEY_PATTERN.match(key):
            raise ValueError(f"label key {key!r} must be 1-63 of letters, digits, '.', '_', '/', '-'")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise ValueError(f"label {key!r}: value longer than {MAX_LABEL_VALUE_CHARS} characters")
    return dict(labels)


def normalize_model_name(name: str) -> str:
    """Ollama's canonical short form: lower case, default registry and namespace dropped, tag added."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


@dataclass(frozen=True)
class InstalledModel:
    """A model on the node's disk (/api/tags)."""

    name: str
    size_bytes: int
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedModel:
    """A model in the node's memory (/api/ps); expires_at is epoch seconds (0 when unknown)."""

    name: str
    size_bytes: int
    expires_at: float


@dataclass(frozen=True)
class ProbeResult:
    """What one active probe found.

    Attributes:
        ok: The node answered every call of the probe in time.
        latency_ms: Wall time of the probe.
        version: The Ollama version (empty when the probe failed).
        error: Why the probe failed, for operators.
        loaded: Loaded models, or None when /api/ps was not read.
        installed: Installed models, or None when /api/tags was not read this time.
    """

    ok: bool
    latency_ms: float
    version: str = ""
    error: str = ""
    loaded: tuple[LoadedModel, ...] | None = None
    installed: tuple[InstalledModel, ...] | None = None


@dataclass
class NodeEntry:
    """A registered node with what probes have learnt about it."""

    node_id: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    draining: bool = False
    probed: bool = False
    healthy: bool = False
    consecutive_probe_failures: int = 0
    probes_done: int = 0
    last_probe_at: float = 0.0
    probe_latency_ms: float = 0.0
    version: str = ""
    last_error: str = ""
    installed: dict[str, InstalledModel] = field(default_factory=dict)
    loaded: dict[str, LoadedModel] = field(default_factory=dict)
    # NOTE: set when a probe saw a loaded model that /api/tags did not list (a fresh pull), or the
    # node just came back: the next probe reads /api/tags whatever the schedule.
    tags_stale: bool = True


class Registry:
    """The registered nodes by id."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeEntry] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeEntry]:
        return iter(sorted(self._nodes.values(), key=lambda n: n.node_id))

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def ids(self) -> list[str]:
        """Every node id, sorted."""
        return sorted(self._nodes)

    def get(self, node_id: str) -> NodeEntry:
        """The node, or UnknownNode."""
        entry = self._nodes.get(node_id)
        if entry is None:
            raise UnknownNode(node_id)
        return entry

    def add(self, node_id: str, address: str, labels: Mapping[str, str]) -> NodeEntry:
        """Validates and registers a node.

        Raises:
            InvalidField: The id, address or labels are malformed (the field is named).
            DuplicateNode: The id or the address is registered already.
        """
        try:
            validate_node_id(node_id)
        except ValueError as exc:
            raise InvalidField("node_id", str(exc)) from None
        try:
            address = validate_address(address)
        except ValueError as exc:
            raise InvalidField("address", str(exc)) from None
        try:
            clean_labels = validate_labels(labels)
        except ValueError as exc:
            raise InvalidField("labels", str(exc)) from None
        if node_id in self._nodes:
            raise DuplicateNode(f"node {node_id!r} is registered already")
        for other in self._nodes.values():
            if other.address == address:
                raise DuplicateNode(f"address {address} is registered already as node {other.node_id!r}")
        entry = NodeEntry(node_id=node_id, address=address, labels=clean_labels)
        self._nodes[node_id] = entry
        return entry

    def remove(self, node_id: str) -> NodeEntry:
        """Unregisters a node and returns it, or raises UnknownNode."""
        entry = self.get(node_id)
        del self._nodes[node_id]
        return entry

    def apply_probe(self, entry: NodeEntry, result: ProbeResult, now: float, unhealthy_after: int) -> bool:
        """Records a probe on the node; returns True when the node just became healthy.

        Args:
            entry: The node.
            result: The probe's findings.
            now: Epoch seconds.
            unhealthy_after: Failed probes in a row that make the node unhealthy.
        """
        came_back = result.ok and not entry.healthy
        entry.probed = True
        entry.probes_done += 1
        entry.last_probe_at = now
        entry.probe_latency_ms = result.latency_ms
        if not result.ok:
            entry.consecutive_probe_failures += 1
            entry.last_error = result.error
            entry.tags_stale = True
            if entry.consecutive_probe_failures >= unhealthy_after:
                entry.healthy = False
            return False
        entry.healthy = True
        entry.consecutive_probe_failures = 0
        entry.version = result.version
        if result.installed is not None:
            entry.installed = {m.name: m for m in result.installed}
            entry.tags_stale = False
        if result.loaded is not None:
            entry.loaded = {m.name: m for m in result.loaded}
            if any(name not in entry.installed for name in entry.loaded):
                entry.tags_stale = True
        return came_back

    def wants_tags(self, entry: NodeEntry, every_n_probes: int) -> bool:
        """True when the next probe of the node should also read /api/tags."""
        return entry.tags_stale or entry.probes_done % every_n_probes == 0
