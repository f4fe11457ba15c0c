"""Fields of Linux's ``/proc`` files (``/proc/meminfo``, ``/proc/self/status``,
``/proc/cpuinfo``)."""
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


def cpuinfo_field(field: str, path: str = "/proc/cpuinfo") -> str | None:
    """The value of the first ``field : value`` line of ``path`` (the first CPU's), or None
    (no such file or line: macOS, Windows, some ARM kernels)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, colon, value = line.partition(":")
                if colon and key.strip() == field:
                    return value.strip()
    except OSError:
        return None
    return None
