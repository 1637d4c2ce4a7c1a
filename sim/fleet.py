"""A fleet of simulated nodes started together, from a profile or from a list of node configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sim.config import NodeConfig
from sim.node import SimNode
from sim.profile import Profile, load_profile


class Fleet:
    """Several `SimNode`s in one event loop.

    Args:
        nodes: the nodes (not started).
    """

    def __init__(self, nodes: list[SimNode]) -> None:
        self.nodes = nodes

    @classmethod
    def from_profile(
        cls,
        profile: Profile | str | Path,
        *,
        base_port: int | None = None,
        count: int | None = None,
        admin_base_port: int | None = 0,
        overrides: dict[str, object] | None = None,
    ) -> Fleet:
        """Build a fleet from a profile (a `Profile`, a path, or a bundled name such as `test`).

        Args:
            profile: the profile.
            base_port: first API port (node i gets base_port + i); 0 = free ports; None = the profile's.
            count: use only the first `count` nodes, or repeat the last node's config to reach it.
            admin_base_port: first admin port (node i gets admin_base_port + i); 0 = free ports;
                None = no admin API.
            overrides: NodeConfig fields forced on every node (e.g. `{"time_scale": 0}`).
        """
        if not isinstance(profile, Profile):
            profile = load_profile(profile)
        entries = list(profile.nodes)
        if count is not None:
            while len(entries) < count:
                last = entries[-1]
                config = last.config.model_copy(update={"name": f"{profile.name}-{len(entries)}"})
                entries.append(last.model_copy(update={"config": config, "port": None, "admin_port": None}))
            entries = entries[:count]
        first = profile.base_port if base_port is None else base_port
        nodes = []
        for index, entry in enumerate(entries):
            config = entry.config
            if overrides:
                config = NodeConfig.model_validate({**config.model_dump(), **overrides})
            if base_port is None and entry.port is not None:
                port = entry.port
            else:
                port = first + index if first else 0
            if admin_base_port is None:
                admin_port: int | None = None
            elif entry.admin_port is not None and admin_base_port == 0:
                admin_port = entry.admin_port
            else:
                admin_port = admin_base_port + index if admin_base_port else 0
            nodes.append(SimNode(config, host=profile.host, port=port, admin_port=admin_port))
        return cls(nodes)

    @classmethod
    def of(cls, configs: list[NodeConfig], host: str = "127.0.0.1") -> Fleet:
        """A fleet of nodes on free ports."""
        return cls([SimNode(c, host=host) for c in configs])

    async def start(self) -> None:
        """Start every node; on a failure the ones already started are stopped."""
        started: list[SimNode] = []
        try:
            for node in self.nodes:
                await node.start()
                started.append(node)
        except BaseException:
            for node in started:
                await node.stop()
            raise

    async def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            await node.stop()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def urls(self) -> list[str]:
        """API base URLs, in node order."""
        return [node.url for node in self.nodes]

    def __getitem__(self, index: int) -> SimNode:
        return self.nodes[index]

    def __iter__(self) -> Iterator[SimNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)
