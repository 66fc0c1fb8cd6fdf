"""Ctrl-C during fit: a request to stop at the next safe point, not an exception
thrown into the middle of bookkeeping."""

import contextlib
import signal
import threading

try:  # the C function that signal.signal wraps in enum conversions: 1 µs, not 11
    from _signal import signal as _set_handler
except ImportError:  # pragma: no cover (an interpreter without CPython's _signal)
    _set_handler = signal.signal


@contextlib.contextmanager
def requests():
    """Within the block, SIGINT sets a flag instead of raising; yields a function
    that tells whether it came. A second Ctrl-C raises KeyboardInterrupt as usual.
    Outside the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    came = []

    def handler(signum, frame):
        if came:
            raise KeyboardInterrupt
        came.append(signum)

    previous = _set_handler(signal.SIGINT, handler)
    try:
        yield lambda: bool(came)
    finally:
        _set_handler(signal.SIGINT, previous)
