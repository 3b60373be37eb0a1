"""``python -m tvm_pipeline``: the same CLI as the ``tvm-pipeline`` script."""

import sys


def _forget_caught_interrupts() -> None:
    """Under ``python -m``, CPython kills the process with SIGINT at exit (status -2 instead of our
    130) when a Ctrl-C ever ended a string ``exec``/``eval`` — dataclasses and namedtuples build
    their methods that way while modules import — even though our handler caught it and the run
    ended cleanly. Each string evaluation resets that flag, so one empty evaluation forgets it."""
    exec("", {})  # pylint: disable=exec-used


try:
    from .cli.main import main
except KeyboardInterrupt:           # Ctrl-C while Python was still importing the CLI
    print("interrupted", file=sys.stderr)
    _forget_caught_interrupts()
    sys.exit(130)

code = main()
_forget_caught_interrupts()
sys.exit(code)
