"""Arguments shared by several subcommands, defined once."""

from __future__ import annotations

import argparse
import json
import sys



def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                        help="static shape for a (dynamic) input, e.g. input:1,3,224,224; repeatable")


def add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=None, metavar="NAME",
                        help="target file name in targets/ or a path to a target JSON "
                             "(default: detected for this machine; see `tvm-pipeline targets`)")


def add_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", default=None, metavar="DIR",
                        help="tuning-log root holding one database folder per target (default: "
                             "$TVM_PIPELINE_LOGS, else the shipped tuned_logs/ when writable, else "
                             "~/.cache/tvm-pipeline/tuned_logs)")


def add_ndk(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ndk", default=None, metavar="PATH",
                        help="Android NDK root (or its clang++) for targets that link with the NDK "
                             "(default: $TVM_NDK_CC, $ANDROID_NDK_HOME, $ANDROID_NDK_ROOT)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def add_reference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="artifact folder written by `tvm-pipeline compile`")
    parser.add_argument("--model", default=None,
                        help="reference ONNX model (default: the one recorded in the artifact)")


def add_validation(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("validation against ONNX Runtime")
    group.add_argument("--samples", type=int, default=3, help="seeded random inputs (default 3)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--image", action="append", default=[], metavar="FILE",
                       help="also validate on this image (MobileNet preprocessing); repeatable")
    add_tolerances(group)
    group.add_argument("--allow-nonfinite", action="store_true",
                       help="accept NaN/Inf outputs where ONNX Runtime gives the same (by default "
                            "a model whose reference outputs are not finite fails validation)")


def add_tolerances(group) -> None:
    group.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    group.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    group.add_argument("--min-cosine", type=float, default=0.9999,
                       help="minimum cosine similarity per tensor (default 0.9999)")


def add_remote(parser: argparse.ArgumentParser, server: bool = True) -> None:
    group = parser.add_argument_group("remote device (TVM RPC)")
    if server:
        group.add_argument("--rpc", default=None, metavar="HOST:PORT",
                           help="run on the device whose TVM RPC server listens there")
    group.add_argument("--tracker", default=None, metavar="HOST:PORT",
                       help="get a device from this TVM RPC tracker (with --key)")
    group.add_argument("--key", default=None,
                       help="device key at the tracker (default: the target's rpc_key)")
    group.add_argument("--timeout", type=float, default=120.0, metavar="S",
                       help="bound on each remote step: connect, upload, one run (default 120)")


def remote_options(args: argparse.Namespace):
    from ..run.remote import RemoteOptions  # pylint: disable=import-outside-toplevel

    return RemoteOptions(rpc=getattr(args, "rpc", None), tracker=args.tracker, key=args.key,
                         timeout_s=args.timeout)


def add_checks(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("device checks of GPU kernels (nvcc, clang, PoCL)")
    group.add_argument("--no-numerics", action="store_true",
                       help="skip running OpenCL kernels on PoCL against their CPU build")
    group.add_argument("--kernel-timeout", type=float, default=20.0, metavar="SECONDS",
                       help="time bound per fused function on PoCL (default 20)")


def check_options(args: argparse.Namespace):
    from ..codegen.devicecheck.check import CheckOptions  # pylint: disable=import-outside-toplevel

    if args.kernel_timeout <= 0:
        from ..errors import UsageError  # pylint: disable=import-outside-toplevel

        raise UsageError(f"--kernel-timeout must be > 0 (got {args.kernel_timeout}).")
    return CheckOptions(numerics=not args.no_numerics, kernel_timeout_s=args.kernel_timeout)


def validate_options(args: argparse.Namespace):
    from pathlib import Path  # pylint: disable=import-outside-toplevel
    from ..run.validate import Tolerances, ValidateOptions  # pylint: disable=import-outside-toplevel

    return ValidateOptions(samples=args.samples, seed=args.seed,
                           images=tuple(Path(p) for p in args.image),
                           tolerances=Tolerances(args.atol, args.rtol, args.min_cosine,
                                                 args.allow_nonfinite))


def input_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    from ..frontend.load import parse_input_shapes  # pylint: disable=import-outside-toplevel

    return parse_input_shapes(args.input_shape)


def emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def say(message: str) -> None:
    """Progress for humans goes to stderr, so that --json output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)
