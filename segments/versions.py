"""Version strings as sortable keys, so SQL and Python compare `3.10.0 > 3.9` alike.

The key is the leading dotted-number part of the version, trailing zero components dropped
("3.2.0" == "3.2"), each component zero-padded to 12 digits and concatenated: plain digits,
so any collation orders it the same way. A suffix ("1.0-beta") is ignored; a string with no
leading number has no key and every version comparison on it is false.
"""

from __future__ import annotations

import re

_LEADING = re.compile(r"\s*v?(\d+(?:\.\d+)*)")
WIDTH = 12


def version_key(version: str | None) -> str | None:
    if version is None:
        return None
    match = _LEADING.match(version)
    if not match:
        return None
    parts = [int(p) for p in match.group(1).split(".")]
    if any(p >= 10**WIDTH for p in parts):
        return None
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return "".join(f"{p:0{WIDTH}d}" for p in parts)
