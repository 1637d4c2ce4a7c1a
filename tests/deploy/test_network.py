"""Who may reach what: the rendered Kubernetes NetworkPolicies, the ports compose publishes, and the one
table in docs/deploy.md and docs/security.md that describes both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.render import (
    by_kind,
    compose_config,
    pod_templates,
)
from tests.helpers.procs import ROOT

ANYONE = "anyone"
PROMETHEUS = "Prometheus"
NAME = "app.kubernetes.io/name"
# The design (issue: default-deny, then only what is needed). Every (pod, port) not listed is unreachable.
EXPECTED: dict[tuple[str, int], set[str]] = {
    ("router", 50051): {ANYONE},
    ("router", 11400): {ANYONE},
    ("cache", 50052): {"router", "prewarm"},
    ("health", 50053): {"router", "prewarm", "cache"},
    ("ollama", 11434): {"router", "cache", "health", "prewarm", "ollama-pull"},
    ("redis", 6379): {"cache", "router"},
    ("postgres", 5432): {"cache", "health", "prewarm"},
    ("router", 9101): {PROMETHEUS},
    ("cache", 9102): {PROMETHEUS},
    ("health", 9103): {PROMETHEUS},
    ("prewarm", 9104): {PROMETHEUS},
}
# The peer the metrics policy names: Prometheus's pods in its own namespace (an overlay changes it).
PROMETHEUS_PEER = (
    (("kubernetes.io/metadata.name", "monitoring"),),
    ((NAME, "prometheus"),),
)
# A rule without ports opens every port, declared or not.
ANY_PORT = 0
# The one network table, in both documents.
DOCS = (ROOT / "docs" / "deploy.md", ROOT / "docs" / "security.md")
TABLE_HEADER = "| to | port | from, on Kubernetes | published on the host by compose |"
# compose services that may publish on every interface by default.
PUBLIC = {"router"}
PROFILE_SETS = [(), ("gpu",), ("sim",), ("ollama", "tracing", "metrics"), ("gpu", "tracing", "metrics")]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions; {} matches everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _pods(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod templates by their `app.kubernetes.io/name`."""
    pods = {}
    for workload, template in pod_templates(rendered).items():
        name = template["metadata"]["labels"].get(NAME)
        assert name, f"{workload}: pods without {NAME} cannot be named in a NetworkPolicy"
        assert name not in pods, f"two workloads' pods are both named {name}"
        pods[name] = template
    return pods


def _container_ports(template: dict[str, Any]) -> dict[str, int]:
    ports = {}
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            ports[port.get("name", str(port["containerPort"]))] = port["containerPort"]
    return ports


def _peers(rule: dict[str, Any], pods: dict[str, dict[str, Any]]) -> set[str]:
    """Who a rule lets in: pod names of this namespace, ANYONE, PROMETHEUS, or a description."""
    if not rule.get("from"):
        return {ANYONE}
    found: set[str] = set()
    for peer in rule["from"]:
        if "ipBlock" in peer:
            found.add(f"ipBlock {peer['ipBlock']}")
        elif "namespaceSelector" in peer:
            key = (
                tuple(sorted(peer["namespaceSelector"].get("matchLabels", {}).items())),
                tuple(sorted(peer.get("podSelector", {}).get("matchLabels", {}).items())),
            )
            plain = set(peer["namespaceSelector"]) | set(peer.get("podSelector", {})) <= {"matchLabels"}
            found.add(PROMETHEUS if key == PROMETHEUS_PEER and plain else f"other namespaces {peer}")
        else:
            selector = peer["podSelector"]
            found |= {name for name, t in pods.items() if _matches(selector, t["metadata"]["labels"])}
    return found


def _allowed(rendered: list[dict[str, Any]]) -> dict[tuple[str, int], set[str]]:
    """(pod, port) -> who may connect, from every NetworkPolicy that selects the pod."""
    pods = _pods(rendered)
    allowed: dict[tuple[str, int], set[str]] = {}
    for policy in by_kind(rendered, "NetworkPolicy").values():
        spec = policy["spec"]
        for name, template in pods.items():
            if not _matches(spec["podSelector"], template["metadata"]["labels"]):
                continue
            named = _container_ports(template)
            for rule in spec.get("ingress", []):
                peers = _peers(rule, pods)
                if not rule.get("ports"):
                    targets = {ANY_PORT, *named.values()}
                else:
                    targets = set()
                    for port in rule["ports"]:
                        assert "endPort" not in port, policy["metadata"]["name"]
                        value = port["port"]
                        assert isinstance(value, int) or value in named, (name, value)
                        targets.add(value if isinstance(value, int) else named[value])
                for target in targets:
                    allowed.setdefault((name, target), set()).update(peers)
    return allowed


def test_every_pod_is_isolated_by_a_default_deny_ingress_policy(rendered: list[dict[str, Any]]) -> None:
    policies = by_kind(rendered, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    pods = _pods(rendered)
    assert {"router", "cache", "health", "prewarm", "ollama", "ollama-pull", "redis", "postgres"} <= set(pods)
    for name, template in pods.items():
        selecting = [
            p for p in policies.values() if _matches(p["spec"]["podSelector"], template["metadata"]["labels"])
        ]
        assert deny in [p["spec"] for p in selecting], name
    for policy in policies.values():
        # NOTE: ingress only; egress stays open (docs/deploy.md says so), so the table covers everything.
        assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
        assert policy["metadata"]["namespace"] == "corral"


def test_allowed_peers_are_exactly_the_design(rendered: list[dict[str, Any]]) -> None:
    allowed = _allowed(rendered)
    assert allowed == EXPECTED
    # Every peer named by the design is a pod the manifests run (no allowance for a pod that does not exist).
    pods = _pods(rendered)
    for (target, port), peers in EXPECTED.items():
        assert port in _container_ports(pods[target]).values(), (target, port)
        assert peers - {ANYONE, PROMETHEUS} <= set(pods), peers


def test_the_prewarm_admin_port_and_the_pull_job_take_no_connections(rendered: list[dict[str, Any]]) -> None:
    allowed = _allowed(rendered)
    assert not {key for key in allowed if key[0] == "ollama-pull"}
    assert ("prewarm", 50054) not in allowed and ("prewarm", ANY_PORT) not in allowed


def _doc_table(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines.count(TABLE_HEADER) == 1, f"{path.name}: the network table ({TABLE_HEADER})"
    start = lines.index(TABLE_HEADER)
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def _doc_rows(table: list[str]) -> Iterator[tuple[list[str], list[int], set[str], str]]:
    for line in table[2:]:
        to, port, k8s, compose = [cell.strip() for cell in line.strip("|").split("|")]
        targets = re.findall(r"`([a-z-]+)`", to)
        if not targets:
            continue
        ports = [int(p) for p in re.findall(r"\b\d{4,5}\b", port)]
        if k8s.startswith("anyone"):
            peers = {ANYONE}
        elif k8s.startswith(PROMETHEUS):
            peers = {PROMETHEUS}
        elif k8s.startswith("nobody"):
            peers = set()
        else:
            peers = set(re.findall(r"`([a-z-]+)`", k8s))
        yield targets, ports, peers, compose


def test_the_docs_table_is_the_rendered_model() -> None:
    tables = [_doc_table(path) for path in DOCS]
    assert tables[0] == tables[1], "docs/deploy.md and docs/security.md carry the same network table"
    documented: dict[tuple[str, int], set[str]] = {}
    for targets, ports, peers, _ in _doc_rows(tables[0]):
        pairs = zip(targets, ports, strict=True) if len(targets) > 1 else ((targets[0], p) for p in ports)
        for key in pairs:
            if peers:
                documented[key] = peers
    assert documented == EXPECTED


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
def test_compose_publishes_only_the_router_on_every_interface(profiles: tuple[str, ...]) -> None:
    services = compose_config(profiles)["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert "router" in published
    for name, ports in published.items():
        for port in ports:
            host_ip = port.get("host_ip", "")
            if name in PUBLIC:
                assert host_ip in ("", "0.0.0.0"), (name, port)
            else:
                assert host_ip == "127.0.0.1", (name, port)
    # The stores and the internal services are not published at all (only the compose network reaches them).
    assert not {"redis", "postgres", "cache", "health", "prewarm", "otel-collector"} & set(published)


def test_compose_opt_out_publishes_the_rest_on_the_address_given() -> None:
    services = compose_config(["sim", "metrics"], env={"CORRAL_PRIVATE_BIND_ADDRESS": "0.0.0.0"})["services"]
    for name in ("sim-1", "grafana", "prometheus"):
        assert {p.get("host_ip") for p in services[name]["ports"]} == {"0.0.0.0"}, name
    assert "CORRAL_PRIVATE_BIND_ADDRESS=127.0.0.1" in (ROOT / ".env").read_text(encoding="utf-8").splitlines()


def test_compose_grafana_is_not_anonymous() -> None:
    grafana = compose_config(["metrics"])["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env and "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
    assert [s["source"] for s in grafana["secrets"]] == ["grafana-admin-password"]
