"""Each engine timed alone, in a fresh process of its own (``bench --isolate``).

The parent runs ``python -m tvm_pipeline.run.isolated ENGINE ARTIFACT ...`` once for the TVM
module, then (with a reference) once for ONNX Runtime: one child at a time, never together. A
child loads only its engine (the artifact's library with TVM's relax VM, or an ONNX Runtime
session with ``--threads`` or one thread per physical core, as :func:`tvm_pipeline.run.validate.
ort_session` builds it; TVM's pool follows ``TVM_NUM_THREADS`` as in-process, the environment being
inherited), builds the same seeded feed as the in-process bench
(:func:`tvm_pipeline.run.validate.seeded_feed`), times it with :func:`tvm_pipeline.run.bench.
time_blocks` (same warm-up, blocks and rests) and prints one JSON object as the last line of its
stdout::

    {"engine": "tvm", "seconds": [0.0012, ...], "other_load": 0.03}

``other_load``: the cores other processes used while the child timed. A child that cannot start,
exits non-zero (its own errors print ``error: ...`` and exit with the project's codes) or prints
anything else becomes a :class:`~tvm_pipeline.errors.ToolchainError` carrying the command and the
child's stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError, ToolchainError, UsageError
from .bench import BenchOptions, IsolatedTimes, LatencyStats, OtherLoad, time_blocks

MODULE = "tvm_pipeline.run.isolated"   # this module's name, also when it runs as __main__
ENGINES = ("tvm", "ort")
_LABELS = {"tvm": "the TVM module", "ort": "ONNX Runtime"}


@dataclass(frozen=True)
class ChildTimes:
    """What one child printed: seconds per timed call, and other processes' load meanwhile."""
    engine: str
    seconds: list[float]
    other_load: float


def command(engine: str, artifact: Path, model: Path | None, options: BenchOptions) -> list[str]:
    """The child's command line (``model``: the ONNX reference, for ``engine`` ``"ort"``)."""
    cmd = [sys.executable, "-m", MODULE, engine, str(Path(artifact).absolute()),
           "--warmup", str(options.warmup), "--runs", str(options.runs), "--seed", str(options.seed)]
    if options.threads is not None:
        cmd += ["--threads", str(options.threads)]
    if model is not None:
        cmd += ["--model", str(Path(model).absolute())]
    return cmd


def _child_env() -> dict[str, str]:
    """This environment, with the folder this package is imported from first on PYTHONPATH: the
    child runs this very code, whatever the current folder or installed copy."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _failure(engine: str, cmd: list[str], what: str, stderr: str) -> ToolchainError:
    return ToolchainError(f"The isolated timing process of {_LABELS[engine]} {what}.",
                          command=cmd, stderr=stderr,
                          hint="Run the command below to reproduce it, or drop --isolate.")


def parse_output(engine: str, cmd: list[str], stdout: str, stderr: str, runs: int) -> ChildTimes:
    """The child's JSON line, checked: ``runs`` positive finite seconds and a load in cores."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError as err:
        raise _failure(engine, cmd, f"printed no JSON result ({err.msg}): {lines[-1][:200]!r}",
                       stderr) from err
    seconds = data.get("seconds") if isinstance(data, dict) else None
    load = data.get("other_load") if isinstance(data, dict) else None
    if not (isinstance(seconds, list) and len(seconds) == runs
            and all(_finite(s) and s > 0 for s in seconds) and _finite(load) and load >= 0):
        raise _failure(engine, cmd, f"printed no timing of {runs} call(s): "
                       f"{(lines[-1] if lines else '<nothing>')[:200]!r}", stderr)
    return ChildTimes(engine, [float(s) for s in seconds], float(load))


def _finite(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def run_child(engine: str, cmd: list[str], runs: int) -> ChildTimes:
    """Run one child to its end and read its result."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_child_env())
    except OSError as err:
        raise ToolchainError(f"Cannot start the isolated timing process of {_LABELS[engine]}: "
                             f"{err.strerror or err}.", command=cmd) from err
    if proc.returncode != 0:
        raise _failure(engine, cmd, f"failed (exit status {proc.returncode})", proc.stderr)
    return parse_output(engine, cmd, proc.stdout, proc.stderr, runs)


def time_isolated(artifact: Path, model: Path | None, options: BenchOptions) -> IsolatedTimes:
    """TVM alone, then (with ``model``, the ONNX reference) ONNX Runtime alone."""
    found: dict[str, ChildTimes] = {}
    for engine in ENGINES if model is not None else ENGINES[:1]:
        cmd = command(engine, artifact, model if engine == "ort" else None, options)
        found[engine] = run_child(engine, cmd, options.runs)
    ort = found.get("ort")
    return IsolatedTimes(LatencyStats.from_seconds(found["tvm"].seconds),
                         LatencyStats.from_seconds(ort.seconds) if ort else None,
                         max(child.other_load for child in found.values()))


# ---- the child ----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="Time one engine alone; print JSON on stdout.")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("artifact")
    parser.add_argument("--model", default=None, help="the ONNX reference (engine ort)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    return parser


def _runner(args: argparse.Namespace, artifact):
    if args.engine == "tvm":
        return artifact.runner()
    from ..frontend.load import read_onnx  # pylint: disable=import-outside-toplevel
    from .validate import ort_runner  # pylint: disable=import-outside-toplevel

    if args.model is None:
        raise UsageError("The ort engine needs --model (the ONNX reference).")
    return ort_runner(read_onnx(args.model), args.threads)


def _time_alone(args: argparse.Namespace) -> ChildTimes:
    from .artifact import load_artifact  # pylint: disable=import-outside-toplevel
    from .validate import seeded_feed  # pylint: disable=import-outside-toplevel

    options = BenchOptions(args.warmup, args.runs, args.seed, args.threads)
    artifact = load_artifact(args.artifact)
    feeds = seeded_feed(artifact.inputs, options.seed)
    runner = _runner(args, artifact)
    with OtherLoad() as load:
        seconds = time_blocks(runner, feeds, options)
    return ChildTimes(args.engine, seconds, load.cores)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        times = _time_alone(args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps({"engine": times.engine, "seconds": times.seconds,
                      "other_load": times.other_load}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
