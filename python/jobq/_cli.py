"""The ``jobq`` command the package installs: the jobq command line itself (the library's,
the same as the binary's), run in this process; ``jobq worker MODULE:ATTR`` runs a Python
queue's handlers, as ``python -m jobq worker`` does."""

from __future__ import annotations

import sys


def main() -> None:
    """Runs ``jobq`` with the process's arguments and exits with its code."""
    from .__main__ import main as run

    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
