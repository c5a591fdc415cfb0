"""SIGTERM and SIGHUP handled as Ctrl-C is, for the long commands.

By default SIGTERM (`kill`, a scheduler's time limit) and SIGHUP (the terminal
closed) end Python on the spot; inside `stop_signals_as_interrupt()` they
raise StopSignal, a KeyboardInterrupt, so that the code that cleans up after
Ctrl-C (bench: stop the workers, keep the finished rows, print the resume
message) runs for them too.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

_active = []  # nesting: only the outermost block sets and restores the handlers


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: `signum` says which (exit status 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """The first SIGTERM or SIGHUP raises StopSignal; later ones are ignored,
    so that the clean-up runs in peace. Signal handlers belong to the main
    thread: elsewhere, and inside an outer such block, nothing changes."""
    if _active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise StopSignal(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    _active.append(True)
    try:
        yield
    finally:
        _active.pop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def stoppable(fn):
    """Run `fn` inside stop_signals_as_interrupt (a decorator)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with stop_signals_as_interrupt():
            return fn(*args, **kwargs)

    return wrapper
