"""Runs the comparative benchmark scenarios: `python -m bench.run [--smoke] [--out DIR] [SCENARIO ...]`.

Each scenario writes bench/results/<scenario>.{json,md,png} (or into --out); then the README's
results table is regenerated from the JSON files (scripts/results_table.py), except for smoke runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import report
from bench.harness.context import Context
from bench.harness.systems import litellm_installed
from scripts.results_table import SCENARIOS as TABLED
from scripts.results_table import update_readme
from tests.helpers.procs import ROOT

# NOTE: the README table's scenarios, in its order, but `rag`, which bench/rag.py runs (`make bench-rag`).
SCENARIOS = tuple(name for name in TABLED if name != "rag")
RESULTS = ROOT / "bench" / "results"


async def _one(name: str, ctx: Context) -> bool:
    module = importlib.import_module(f"bench.scenarios.{name.replace('-', '_')}")
    started = time.monotonic()
    print(f"== {name} ({'smoke' if ctx.smoke else 'full'})", flush=True)
    report.mark_start(name)
    try:
        doc = await module.run(ctx)
    except Exception:
        logging.exception("scenario %s failed", name)
        return False
    for target in doc.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        print(f"   {name}: target {target['name']}: {target['value']} ({verdict})", flush=True)
    print(f"   {name}: done in {time.monotonic() - started:.0f} s -> {ctx.out_dir / name}.json", flush=True)
    return True


async def _run(names: list[str], ctx: Context) -> int:
    if ctx.smoke:
        # NOTE: a smoke run checks the files, not the figures: the scenarios overlap to save time.
        results = await asyncio.gather(*(_one(name, ctx) for name in names))
    else:
        results = [await _one(name, ctx) for name in names]
    return sum(not ok for ok in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long runs with tiny loads")
    parser.add_argument("--out", type=Path, default=None, help="result folder (default bench/results)")
    parser.add_argument("--no-litellm", action="store_true", help="Corral only")
    args = parser.parse_args()
    names = list(args.scenarios) or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    with_litellm = litellm_installed() and not args.no_litellm
    if not with_litellm:
        print("LiteLLM: not installed (bench/litellm/install.sh) or disabled: Corral only", flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as scratch:
        out = args.out or (Path(scratch) / "results" if args.smoke else RESULTS)
        ctx = Context(out_dir=out, work_dir=Path(scratch), smoke=args.smoke, litellm=with_litellm)
        import uvloop

        failed = uvloop.run(_run(names, ctx))
        if not args.smoke and args.out is None:
            update_readme()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
