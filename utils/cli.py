"""Entry-script wrapper: a user mistake (bad flag, missing or bad data, wrong checkpoint, diverged
loss) ends the run with one `error:` line and exit status 2 instead of a stack trace."""
import signal
import sys
from typing import Callable

from utils.search import PRUNED_EXIT, PrunedRun
from utils.trainer import NonFiniteLossError

USER_ERRORS = (ValueError, FileNotFoundError, NonFiniteLossError)


def exit_on_terminate(signal_number, frame):
    """SIGTERM (a job scheduler's stop, a launcher ending its workers) as an exit that unwinds, so that a
    save in progress deletes its temporary file instead of leaving it behind."""
    raise SystemExit(128 + signal_number)


def run_entry(main: Callable, argv=None):
    signal.signal(signal.SIGTERM, exit_on_terminate)
    try:
        return main(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except PrunedRun as pruned:
        print(f"pruned: {pruned}", file=sys.stderr)
        raise SystemExit(PRUNED_EXIT) from None
