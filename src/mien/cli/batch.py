"""The one batch rule every command follows for lists of inputs (photos, files, crops).

A bad item is skipped with one message naming it and saying why (``mien: skipped ITEM: reason``), the
rest is done, a summary line ends the run when anything was skipped, and the exit status says how it
went: 0 every item done, 1 some skipped (``EXIT_SKIPPED``), 2 none usable (the command raises a
:class:`~mien.errors.MienError` listing them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mien.errors import MienError

EXIT_SKIPPED = 1


class Batch:
    """Counts items done and skipped for one run; ``write`` prints a message (tqdm's ``write`` under a bar)."""

    def __init__(self, what: str, write: Callable[[str], None] | None = None):
        self.what = what  # plural noun: "photos", "identity photos"
        self.done = 0
        self.skipped: list[str] = []
        self.write = write or (lambda msg: print(msg, file=sys.stderr))

    def skip(self, item, reason: str) -> None:
        reason = str(reason)
        prefix = f"{item}: "
        reason = reason[len(prefix):] if reason.startswith(prefix) else reason  # "PATH: PATH: ..." once only
        self.skipped.append(f"{item}: {reason}")
        self.write(f"mien: skipped {item}: {reason}")

    def ok(self) -> None:
        self.done += 1

    def check_any(self) -> None:
        """Raise when every item was skipped (exit 2): nothing to go on with."""
        if not self.done:
            total = len(self.skipped)
            raise MienError(f"none of the {total} {self.what} could be used (each is named above)" if total > 1
                            else f"no usable {self.what}: {self.skipped[0] if self.skipped else 'none given'}")

    def finish(self) -> int:
        """Print the summary (when something was skipped) and return the exit status."""
        if not self.skipped:
            return 0
        total = self.done + len(self.skipped)
        print(f"mien: {len(self.skipped)} of {total} {self.what} skipped (named above); the other "
              f"{self.done} done", file=sys.stderr)
        return EXIT_SKIPPED if self.done else 2
