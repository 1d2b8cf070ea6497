"""Lines for the person running a stage: on stderr, above any progress bar, from the first
process only under torchrun (whose other processes would repeat them)."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def log(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        tqdm.write(message, file=sys.stderr)
