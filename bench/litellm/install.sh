#!/usr/bin/env bash
# Install LiteLLM's proxy into its own virtual environment (idempotent).
set -euo pipefail
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${LITELLM_VENV:-$HERE/../.venv-litellm}"
STAMP="$VENV/.litellm-$LITELLM_VERSION"
PYTHON="${PYTHON:-python3}"

if [[ -f "$STAMP" ]]; then
    echo "litellm[proxy]==$LITELLM_VERSION already installed in $VENV"
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION"
"$VENV/bin/litellm" --version >/dev/null 2>&1 || true
touch "$STAMP"
echo "installed litellm[proxy]==$LITELLM_VERSION into $VENV"
