"""Stop a training run cleanly on Ctrl-C or ``kill``.

Without this, SIGINT / SIGTERM end a run where it stands, and everything since the last
periodic checkpoint is lost (up to ``checkpoint_every`` steps). With it, the first signal
asks the run to finish its current step, write a checkpoint and export ``latest.safetensors``
(so ``--resume`` continues exactly from there); a second signal interrupts at once, as before.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager: while active, :attr:`requested` turns true on the first SIGINT/SIGTERM.

    Handlers can only be installed from the main thread; elsewhere (a run started from a
    worker thread) it stays inactive and signals keep their usual effect.
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}
        self._owner_pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._owner_pid:
            # A forked data-loader worker inherits the handler; Ctrl-C reaches it too. The
            # training process decides; the worker keeps serving batches until it is closed.
            return
        if self.requested:  # the second one: stop now, like an unhandled Ctrl-C
            self._restore()
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if self.announce:
            print(f"m2ae train: {self.signal_name}: stopping after this step with a "
                  "checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        self._owner_pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()
