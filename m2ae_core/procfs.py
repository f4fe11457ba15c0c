"""Sizes from Linux's ``/proc`` files (``/proc/meminfo``, ``/proc/self/status``)."""
from __future__ import annotations


def kib_field_bytes(path: str, field: str) -> int | None:
    """The ``field:  N kB`` line of ``path`` in bytes, or None (no such file or line)."""
    try:
        with open(path, encoding="ascii") as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
