"""The deployment files agree with the services: config keys, ports, drain times, models and nodes."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from services.common.config import CorralConfig, load_config
from services.prewarm.seeds import load_seed_file
from tests.helpers.procs import ROOT

SERVICES = ("router", "cache", "health", "prewarm")
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "corral.yaml"
K8S_BASE = ROOT / "deploy" / "kubernetes" / "base"
# NOTE: the preStop pause in the base Deployments; SIGTERM (and the drain) starts after it.
PRESTOP_S = 5


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    return services


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S_BASE.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "corral.yaml", "seed-queries.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            resources[(doc["kind"], doc["metadata"]["name"])] = doc
    return resources


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert match, text
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def _compose_config() -> CorralConfig:
    env = {k: str(v) for k, v in _compose()["router"]["environment"].items()}
    env.pop("CORRAL_CONFIG")
    # NOTE: compose substitutes ${VAR:-default} before the service sees it; the defaults are what is checked.
    env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    return load_config(COMPOSE_CONFIG, env=env)


def _k8s_env(name: str) -> dict[str, str]:
    """The literal `value`s a base Deployment's container sets (not the ones from Secrets or fields)."""
    pod = _k8s()[("Deployment", name)]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == name)
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _k8s_config() -> CorralConfig:
    env = {"CORRAL_ROUTER__REPORTER": "router-abc"}
    env |= {k: v for k, v in _k8s_env("router").items() if k.startswith("CORRAL_AUTH__")}
    return load_config(K8S_BASE / "corral.yaml", env=env)


def test_compose_and_kubernetes_configs_load_with_their_environment() -> None:
    compose = _compose_config()
    assert compose.router.health_addr == "health:50053" and compose.router.cache_addr == "dns:///cache:50052"
    assert compose.prewarm.router_addr == "router:50051"
    k8s = _k8s_config()
    for cfg in (compose, k8s):
        for name in SERVICES:
            assert getattr(cfg, name).host == "0.0.0.0", f"{name} must listen beyond the container"


@pytest.mark.parametrize(
    "seed_file", [COMPOSE_CONFIG.parent / "seed-queries.yaml", K8S_BASE / "seed-queries.yaml"]
)
def test_seed_files_load(seed_file: Path) -> None:
    assert load_seed_file(seed_file).queries()


@pytest.mark.parametrize("name", SERVICES)
def test_compose_service_matches_its_config(name: str) -> None:
    cfg = getattr(_compose_config(), name)
    service = _compose()[name]
    assert service["command"] == [f"services.{name}"]
    assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{cfg.port}"
    # STYLE 15/24: compose's stop_grace_period outlasts the service's drain.
    assert _seconds(service["stop_grace_period"]) > cfg.grace_s
    assert "/etc/corral/corral.yaml" in " ".join(service["volumes"])


@pytest.mark.parametrize("name", SERVICES)
def test_kubernetes_deployment_matches_its_config(name: str) -> None:
    cfg = getattr(_k8s_config(), name)
    resources = _k8s()
    pod = resources[("Deployment", name)]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == name)
    assert container["args"] == [f"services.{name}"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == cfg.port, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == cfg.port and ports["metrics"] == cfg.metrics_port
    pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pause in (0, PRESTOP_S)
    assert pod["terminationGracePeriodSeconds"] > pause + cfg.grace_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"requests", "limits"} <= set(container["resources"])
    service = resources[("Service", name)]["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]}["grpc"] == cfg.port


def test_kubernetes_scaling_objects() -> None:
    resources = _k8s()
    for name in ("router", "cache"):
        assert resources[("HorizontalPodAutoscaler", name)]["spec"]["scaleTargetRef"]["name"] == name
    for name in ("router", "cache", "health", "ollama"):
        assert ("PodDisruptionBudget", name) in resources
    # Routers balance over every cache and health replica: their Services are headless.
    for name in ("cache", "health"):
        assert resources[("Service", name)]["spec"]["clusterIP"] == "None"


def test_health_registry_lists_the_ollama_statefulset_pods() -> None:
    resources = _k8s()
    statefulset = resources[("StatefulSet", "ollama")]["spec"]
    service = statefulset["serviceName"]
    expected = [f"http://ollama-{i}.{service}:11434" for i in range(statefulset["replicas"])]
    cfg = _k8s_config()
    assert [node.address for node in cfg.health.nodes] == expected
    assert [node.address for node in cfg.router.nodes] == expected
    gpu = statefulset["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpu == "1"
    # NOTE: the Job reads its lists from the ConfigMap ollama-pull (its own template stays unchanged).
    pull_env = resources[("ConfigMap", "ollama-pull")]["data"]
    assert pull_env["OLLAMA_NODES"].split() == [a.removeprefix("http://") for a in expected]
    assert pull_env["OLLAMA_PULL_MODELS"].split() == [m.name for m in cfg.prewarm.models]
    assert cfg.cache.embedder.model in pull_env["OLLAMA_PULL_MODELS"].split()
    assert cfg.cache.embedder.node_urls == expected


def test_compose_nodes_and_pulled_models_match_the_config() -> None:
    cfg = _compose_config()
    services = _compose()
    pull = services["ollama-pull"]["environment"]["OLLAMA_PULL_MODELS"]
    default = re.fullmatch(r"\$\{OLLAMA_PULL_MODELS:-([^}]*)\}", pull)
    assert default and default.group(1).split() == [m.name for m in cfg.prewarm.models]
    assert cfg.cache.embedder.model in default.group(1).split()
    names = [f"ollama-{i}" for i in range(1, 5)]
    assert [node.address for node in cfg.health.nodes] == [f"http://{n}:11434" for n in names]
    assert cfg.cache.embedder.node_urls == [f"http://{n}:11434" for n in names]
    # The embedder follows health's registry; its node_urls are only the start.
    assert cfg.cache.embedder.health_addr == "health:50053"
    # Each node profile answers under the same four names.
    assert all(n in services for n in names)
    for prefix in ("ollama-gpu-", "sim-"):
        aliases = [services[f"{prefix}{i}"]["networks"]["default"]["aliases"] for i in range(1, 5)]
        assert aliases == [[n] for n in names]


def test_prometheus_scrapes_every_metrics_port() -> None:
    cfg = _compose_config()
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{getattr(cfg, name).metrics_port}" for name in SERVICES}


def test_compose_turns_authentication_on_with_mounted_key_files() -> None:
    auth = _compose_config().auth
    assert auth.enabled and not auth.keys and not auth.service_key
    secrets = PurePosixPath(auth.keys_file).parent
    assert PurePosixPath(auth.service_key_file).parent == secrets
    for name in SERVICES:
        service = _compose()[name]
        assert service["environment"]["CORRAL_AUTH__ENABLED"] == "${CORRAL_AUTH_ENABLED:-true}"
        assert f"./deploy/compose/secrets:{secrets}:ro" in service["volumes"], name
    # Only the README (and the ignore rules) of the mounted folder are in the checkout.
    ignore = (ROOT / "deploy" / "compose" / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert {"*", "!README.md"} <= set(ignore)
    assert "CORRAL_API_KEYS" not in COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SERVICES)
def test_kubernetes_deployment_mounts_the_key_secrets(name: str) -> None:
    env = _k8s_env(name)
    assert env["CORRAL_AUTH__ENABLED"] == "true"
    pod = _k8s()[("Deployment", name)]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == name)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    wanted = {
        "CORRAL_AUTH__KEYS_FILE": "corral-api-keys",
        "CORRAL_AUTH__SERVICE_KEY_FILE": "corral-service-key",
    }
    for var, secret in wanted.items():
        path = PurePosixPath(env[var])
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True
        # NOTE: a mount point inside the read-only ConfigMap volume at /etc/corral cannot be created.
        assert not str(path).startswith("/etc/corral/"), path
        sources = volumes[mount["name"]]["projected"]["sources"]
        items = {
            (src["secret"]["name"], item["key"], item["path"])
            for src in sources
            for item in src["secret"]["items"]
        }
        assert (secret, path.name, path.name) in items, (var, items)
    assert "CORRAL_API_KEYS" not in {e["name"] for e in container["env"]}


def test_kubernetes_example_overlay_generates_the_secrets() -> None:
    overlay = K8S_BASE.parent / "overlays" / "example"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text(encoding="utf-8"))
    generated = {g["name"]: g for g in kustomization["secretGenerator"]}
    wanted = {
        "corral-api-keys": "api-keys.yaml",
        "corral-service-key": "service-key",
        "corral-redis": "password",
        "corral-redis-events": "password",
        "corral-postgres": "password",
    }
    assert set(generated) == set(wanted)
    for secret, key in wanted.items():
        (entry,) = generated[secret]["files"]
        file_key, _, file = entry.partition("=")
        # The real file is git-ignored; its placeholder is committed beside it.
        assert file_key == key and (overlay / f"{file}.example").is_file(), entry
    # The keys placeholder lists no keys: services started with it refuse to start.
    placeholder = yaml.safe_load((overlay / "secrets" / "api-keys.yaml.example").read_text(encoding="utf-8"))
    assert placeholder == {"keys": []}


def test_cache_store_settings_load_without_a_password_in_the_url_or_dsn() -> None:
    compose = {k: str(v) for k, v in _compose()["cache"]["environment"].items()}
    compose = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in compose.items() if k != "CORRAL_CONFIG"}
    k8s = {k: v for k, v in _k8s_env("cache").items() if k != "CORRAL_CONFIG"}
    for cfg, secrets in (
        (load_config(COMPOSE_CONFIG, env=compose), "/etc/corral/secrets"),
        (load_config(K8S_BASE / "corral.yaml", env=k8s), "/etc/corral-secrets"),
    ):
        assert cfg.redis.password_file == f"{secrets}/redis-password" and not cfg.redis.password
        assert cfg.postgres.password_file == f"{secrets}/postgres-password" and not cfg.postgres.password
        assert cfg.redis.url == "redis://redis:6379/0"
        assert cfg.postgres.dsn == "postgresql://corral@postgres:5432/corral"
