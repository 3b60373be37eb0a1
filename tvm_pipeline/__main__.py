import sys

try:
    from .cli.main import main
except KeyboardInterrupt:           # Ctrl-C while Python was still importing the CLI
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
