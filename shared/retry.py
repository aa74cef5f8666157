"""The one retry policy of every loop that waits for a broker or a database to come back:
0.2 s, doubled at each failure up to 10 s, each wait a random 50-100% of that (so that many
processes that lost the same peer do not all come back at the same instant), and from the
start again after a success."""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST_SECONDS = 0.2
MAX_SECONDS = 10.0


@dataclass
class Backoff:
    """How long to wait before the next try of one loop."""

    failures: int = 0

    def next_delay(self) -> float:
        """The wait before the next try, counting one more failure."""
        ceiling = min(MAX_SECONDS, FIRST_SECONDS * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return ceiling * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """A try succeeded: the next failure waits the shortest again."""
        self.failures = 0
