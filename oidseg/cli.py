"""argparse types for the scripts' numeric options: a value out of range is
an argparse error (usage line, exit 2) naming the option and the range, the
same ranges as schemas/config.schema.yaml."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(kind: type, low: float | None, high: float | None, *, low_open: bool = False,
            what: str) -> Callable[[str], float | int]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


#: a threshold or IoU in [0, 1]
fraction = _number(float, 0.0, 1.0, what="a number in [0, 1]")
#: an IoU that suppresses something: (0, 1]
open_fraction = _number(float, 0.0, 1.0, low_open=True, what="a number in (0, 1]")
#: a count of at least one
positive_int = _number(int, 1, None, what="an integer >= 1")
#: a count, a seed or an offset: zero or more
nonnegative_int = _number(int, 0, None, what="an integer >= 0")
