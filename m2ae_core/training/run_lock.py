"""One training process per output folder.

Two ``m2ae train`` runs writing into one folder (a second launch of the same config, a
``--resume`` started while the first run is still alive) interleave their metrics and race on
``last.pt``: each overwrites the other's checkpoints, and the folder ends up with a history
neither run had. An advisory ``flock`` on ``<out>/train.lock`` makes the second run stop at
once, naming the process that holds the folder.

The kernel drops a ``flock`` when its process dies, however it dies, so a crashed or killed
run never leaves a stale lock behind. The file itself stays: deleting it on exit would let a
third process lock a fresh file while a second still holds the old one. On platforms without
``fcntl`` (Windows) there is no lock.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..errors import M2AEError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = "train.lock"


class RunFolderLock:
    """Hold ``<folder>/train.lock`` exclusively until :meth:`release` (or process exit)."""

    def __init__(self, folder) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._file = None

    def acquire(self) -> "RunFolderLock":
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise M2AEError(
                f"{self.path.parent} is in use by another training run ({holder}); wait for "
                "it to finish or stop it, then --resume, or choose another output folder (--out)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
