"""Ctrl-C during fit: a request to stop at the next safe point, not an exception
thrown into the middle of bookkeeping."""

import contextlib
import signal
import threading


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

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(came)
    finally:
        signal.signal(signal.SIGINT, previous)
