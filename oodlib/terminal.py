"""What a chapter shows on the terminal and never in a notebook's outputs or the rendered book (issue 13):
progress bars, and the kernel's log lines the runner keeps quiet.

A bar is drawn on the *process's own* standard error, ``sys.__stderr__``, and only when

- ``$OODLIB_PROGRESS`` is ``1``: ``python -m oodlib run`` sets it for the chapter's kernel, which it starts
  without ipykernel's file-descriptor capture, so the kernel's standard error is the terminal's and nothing of
  the bar reaches a cell's output; or
- ``$OODLIB_PROGRESS`` is unset, the code runs outside a Jupyter kernel (``sys.stderr`` is the process's own)
  and standard error is a terminal: a script or a REPL on the command line.

``$OODLIB_PROGRESS=0`` turns every bar off. The book's runner sets neither, and a kernel started by Jupyter or
by plain papermill draws no bar (its ``sys.stderr`` is the notebook's stream).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

PROGRESS_ENV = "OODLIB_PROGRESS"
T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether :func:`terminal_progress` draws a bar here (see the module docstring for the rule)."""
    setting = os.environ.get(PROGRESS_ENV)
    if setting is not None:
        return setting == "1" and sys.__stderr__ is not None
    stream = sys.__stderr__
    return stream is not None and sys.stderr is stream and stream.isatty()


def terminal_progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it"
                      ) -> Iterable[T] | Iterator[T]:
    """``iterable`` itself, or a tqdm bar over it on the terminal when :func:`progress_enabled`.

    The bar is left off the screen when done (``leave=False``) and refreshes at most ten times a second, so a
    loop of a few milliseconds per item is not slowed measurably; the items are never changed.
    """
    if not progress_enabled():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.__stderr__, leave=False, disable=False,
                mininterval=0.1, dynamic_ncols=True)


# The kernel's own log lines that every successful run printed on the terminal: ipykernel's notice that its
# localhost TCP sockets are not encrypted, and the interrupt (SIGINT) that jupyter_client sends before asking the
# kernel to shut down, logged at ERROR level when it lands while a message is being handled. Only these lines
# are dropped; every other kernel log line is kept.
QUIET_KERNEL_MESSAGES = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")


class KernelLogFilter:
    """A ``logging`` filter for the kernel's console handler (installed by the runner through the kernel's
    ``logging_config``): drops the records whose message starts with one of :data:`QUIET_KERNEL_MESSAGES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(QUIET_KERNEL_MESSAGES)
