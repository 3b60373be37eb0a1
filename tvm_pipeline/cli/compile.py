"""``tvm-pipeline compile MODEL``: build with the target's tuning database, validate, export."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("compile", help="compile (with tuned kernels), validate, write an artifact")
    common.add_model(parser)
    common.add_target(parser)
    common.add_logs(parser)
    parser.add_argument("-o", "--output", default=None,
                        help="artifact folder (default: MODEL-TARGET.tvm next to the current dir)")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip the ONNX Runtime comparison (the artifact records it was skipped)")
    parser.add_argument("--no-borrow", action="store_true",
                        help="leave CPU kernels without a tuning record naive instead of borrowing "
                             "the schedule of the most similar tuned kernel")
    parser.add_argument("--untuned", action="store_true",
                        help="ignore tuning databases (kernels get default schedules; for comparisons)")
    parser.add_argument("--no-defaults", action="store_true",
                        help="leave kernels that nothing tuned or borrowed as naive loops instead of "
                             "giving them default schedules (for comparisons)")
    common.add_ndk(parser)
    common.add_validation(parser)
    common.add_remote(parser)
    common.add_checks(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import CompileOptions, compile as compile_model, prepare  # pylint: disable=import-outside-toplevel
    from ..run.artifact import check_destination  # pylint: disable=import-outside-toplevel
    from ..target.spec import resolve_target  # pylint: disable=import-outside-toplevel
    from ..target.toolchains import toolchain_for  # pylint: disable=import-outside-toplevel

    if args.output is not None:
        check_destination(args.output)   # an unwritable -o fails before the model is even read
    target = resolve_target(args.target)
    toolchain_for(target, args.ndk)      # a missing cross compiler or NDK fails before the build
    remote = common.remote_options(args)
    prepared = prepare(args.model, target, common.input_shapes(args))
    output = args.output or f"{prepared.loaded.name}-{prepared.target.name}.tvm"
    common.say(f"compiling {prepared.loaded.name} for {prepared.target.name} "
               f"({len(prepared.kernels)} kernels)")
    result = compile_model(prepared, output, CompileOptions(
        logs=args.logs, use_database=not args.untuned, borrow=not args.no_borrow,
        defaults=not args.no_defaults,
        validate=not args.no_validate,
        validate_options=common.validate_options(args), ndk=args.ndk, remote=remote,
        checks=common.check_options(args)))
    if args.json:
        common.emit_json({"artifact": str(result.artifact.path), "seconds": round(result.seconds, 1),
                          **result.artifact.metadata})
        return 0
    print(result.build.summary())
    if prepared.integer.quantized:
        print(prepared.integer.summary())
    without_record = [k for k in result.build.untuned_kernels if k not in result.build.replaced]
    if without_record:
        print(f"  to tune the {len(without_record)} kernels without a record (tuned ones are "
              f"skipped): tvm-pipeline tune {args.model} --target {prepared.target.name} "
              "--time-budget 10m")
    slowest = result.build.heaviest_untuned(3)
    if slowest:
        print("  largest kernels without a tuned schedule: " + ", ".join(
            f"{k} ({100 * share:.0f}% of the work, {source})" for k, share, source in slowest)
            + f"; measured times per kernel: tvm-pipeline profile {result.artifact.path}")
    if result.checks is not None:
        print("device checks:\n" + result.checks.format())
    if result.validation is not None:
        print(result.validation.format())
    else:
        print(f"validation skipped: {result.validation_skipped}")
    print(f"wrote {result.artifact.path} in {result.seconds:.1f} s")
    return 0
