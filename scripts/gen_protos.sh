#!/usr/bin/env bash
# Regenerates the Python stubs and .pyi types from protos/ into gen/python/ (reproducible: the
# toolchain is pinned in pyproject.toml and the output is sorted and committed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
out=gen/python
rm -rf "$out/corral"
mkdir -p "$out/corral/v1"
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  $(find protos/corral -name '*.proto' | sort)
printf '"""Generated protobuf packages for Corral (do not edit; run make proto)."""\n' > "$out/corral/__init__.py"
printf '"""Generated Corral v1 contracts (do not edit; run make proto)."""\n' > "$out/corral/v1/__init__.py"
touch "$out/corral/py.typed"
