"""The one error type a user's own mistake surfaces as."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ProbekitError(ValueError):
    """A user error: bad input, a missing file, a name that does not exist.

    The message is one line that names the bad value and what was expected. The
    CLI turns it into exit code 2 without a traceback.
    """


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name`` (for "did you mean" messages)."""
    return difflib.get_close_matches(name, list(valid), n=n, cutoff=0.5)


def unknown(kind: str, name: str, valid: Iterable[str]) -> ProbekitError:
    """An error for a name that is not among ``valid``, naming the closest ones."""
    valid = sorted(valid)
    near = closest(name, valid)
    hint = f"; did you mean {', '.join(repr(v) for v in near)}?" if near else ""
    shown = ", ".join(valid) if len(valid) <= 12 else ", ".join(valid[:12]) + ", …"
    return ProbekitError(f"unknown {kind} {name!r}{hint} (valid: {shown})")
