"""Who may touch a model's weights, and when.

Many readers at once (``predict``, ``evaluate``, ``input_gradient``, copies), or one
writer (each run of compiled training steps, a rollback, the callbacks between
them, ``set_weights``, a load), never both: a reader never sees half-written
weights. The writing thread may read too (a validation pass inside ``fit``). A
waiting writer goes before readers that come after it, so steady predictions do
not starve training; and readers waiting when a write ends go before the next
write, so that ``fit`` lets them in between its runs of minibatches (a few
milliseconds apart) and does not starve them either. One ``fit`` runs at a time: a
second, from another thread, raises.
"""

import threading


class Guard:
    def __init__(self):
        self._lock = threading.Lock()  # entered directly on the fast paths (C-level)
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._writer = None  # the writing thread's ident
        self._depth = 0  # nested writes by that thread
        self._waiting = 0  # writers waiting
        self._queued = 0  # readers waiting
        self._turn = False  # a writer just finished: the queued readers go first
        self._fitting = threading.Lock()
        self._fitter = None  # the fitting thread's ident

    def acquire_read(self):
        """Wait until no other thread writes; return a token for ``release_read``."""
        with self._lock:
            if self._writer is None and not self._waiting:  # the usual case
                self._readers += 1
                return True
            if self._writer == threading.get_ident():
                return False
            self._queued += 1
            try:
                while self._writer is not None or (self._waiting and not self._turn):
                    self._cond.wait()
                self._readers += 1
            finally:
                self._queued -= 1
                if not self._queued and self._turn:
                    self._turn = False
                    self._cond.notify_all()
            return True

    def release_read(self, token):
        if token:
            with self._lock:
                self._readers -= 1
                if not self._readers and self._waiting:
                    self._cond.notify_all()

    def acquire_write(self):
        me = threading.get_ident()
        with self._lock:
            if self._writer is None and not self._readers and not self._turn:  # usual case
                self._writer, self._depth = me, 1
                return
            if self._writer == me:
                self._depth += 1
                return
            self._waiting += 1
            try:
                while self._writer is not None or self._readers or self._turn:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer, self._depth = me, 1

    def release_write(self):
        with self._lock:
            self._depth -= 1
            if not self._depth:
                self._writer = None
                self._turn = self._queued > 0
                if self._queued or self._waiting:
                    self._cond.notify_all()

    def reading(self):
        return _Section(self.acquire_read, self.release_read)

    def writing(self):
        return _Section(self.acquire_write, lambda token: self.release_write())

    def fitting(self):
        """The section of one ``fit``; entering it while another thread fits raises."""
        if not self._fitting.acquire(blocking=False):
            where = (
                "in this thread (a callback cannot start another fit)"
                if self._fitter == threading.get_ident()
                else "in another thread"
            )
            raise RuntimeError(
                f"this model is already training {where}: one fit at a time"
                " per model (copy.deepcopy(model) gives an independent one)"
            )
        self._fitter = threading.get_ident()

        def leave(token):
            self._fitter = None
            self._fitting.release()

        return _Section(lambda: None, leave)


class _Section:
    __slots__ = ("_enter", "_exit", "_token")

    def __init__(self, enter, leave):
        self._enter, self._exit = enter, leave

    def __enter__(self):
        self._token = self._enter()
        return self

    def __exit__(self, *exc):
        self._exit(self._token)
        return False
