"""What the benchmark scripts share: where they write, and how they write their results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/results", help="result tables and JSON")
    parser.add_argument("--work", default="bench/work", help="exported models and artifacts")


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
