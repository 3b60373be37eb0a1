"""What the benchmark scripts share: where they write, how they time, and how they write results.

Timing is :func:`tvm_pipeline.bench` (:mod:`tvm_pipeline.run.bench`: TVM and ONNX Runtime in
alternating blocks in one process; with ``--isolate`` each engine also alone in a fresh process of
its own); the scripts have no timing loop of their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tvm_pipeline as tp
from tvm_pipeline.run.bench import BenchOptions, BenchResult

# what a row records of a result's trustworthiness (keys of BenchResult.to_dict())
RELIABILITY = ("reliable", "reason", "other_load_cores", "isolated_tvm_median_ms",
               "isolated_ort_median_ms", "isolated_ratio")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/results", help="result tables and JSON")
    parser.add_argument("--work", default="bench/work", help="exported models and artifacts")


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--isolate", action="store_true",
                        help="also time each engine alone in a fresh process (as `tvm-pipeline "
                             "bench --isolate`); rows record both medians and whether they agree")


def bench_artifact(artifact, runs: int, warmup: int = 10,
                   isolate: bool = False) -> tuple[BenchResult, dict]:
    """``artifact`` timed against ONNX Runtime, and the fields of :data:`RELIABILITY` for its row;
    an unreliable result is said on stderr with its reason."""
    result = tp.bench(artifact, options=BenchOptions(warmup=warmup, runs=runs, isolate=isolate))
    if not result.reliable:
        print(f"UNRELIABLE ({Path(artifact.path).name}): {result.reason}", file=sys.stderr,
              flush=True)
    data = result.to_dict()
    return result, {key: data[key] for key in RELIABILITY}


def output_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(out, work), created."""
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return out, work


def write_results(out: Path, name: str, text: str, data) -> None:
    """OUT/NAME.md (the table) and OUT/NAME.json, then the table on stdout."""
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)
