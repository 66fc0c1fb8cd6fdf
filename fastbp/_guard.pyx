# cython: language_level=3
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

Compiled because a one-row ``predict`` enters and leaves a read section on every
call: in Python that took about 1 µs, a third of the whole prediction. Here a read
section without a writer about takes no lock at all: each method changes the counts
with the GIL held and calls nothing that could let another thread run in between
(no Python code, no blocking), so each such change is atomic. The lock (with its
condition) orders the waiting: a thread changes the counts with it held too, and
waits and notifies on it. The GIL is there even on a free-threaded Python: this
module does not declare itself free-threading compatible, so importing it turns the
GIL back on.
"""

import threading

from cpython.pythread cimport PyThread_get_thread_ident


cdef class Guard:
    cdef object _lock  # held by a thread that waits, or changes the counts of one
    cdef object _cond  # on _lock: waiting readers and writers
    cdef object _fitting  # held by the fitting thread
    cdef Py_ssize_t _readers
    cdef bint _written  # a thread writes: _writer is its ident
    cdef unsigned long _writer
    cdef Py_ssize_t _depth  # nested writes by that thread
    cdef Py_ssize_t _waiting  # writers waiting
    cdef Py_ssize_t _queued  # readers waiting
    cdef bint _turn  # a writer just finished: the queued readers go first
    cdef bint _fits  # a thread fits: _fitter is its ident
    cdef unsigned long _fitter

    def __cinit__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._fitting = threading.Lock()

    def acquire_read(self):
        """Wait until no other thread writes; return a token for ``release_read``."""
        if not self._written and not self._waiting:  # the usual case: no lock
            self._readers += 1
            return True
        self._lock.acquire()
        try:
            if not self._written and not self._waiting:  # the writer left meanwhile
                self._readers += 1
                return True
            if self._written and self._writer == PyThread_get_thread_ident():
                return False
            self._queued += 1
            try:
                while self._written or (self._waiting and not self._turn):
                    self._cond.wait()
                self._readers += 1
            finally:
                self._queued -= 1
                if not self._queued and self._turn:
                    self._turn = False
                    self._cond.notify_all()
            return True
        finally:
            self._lock.release()

    def release_read(self, token):
        if not token:
            return
        self._readers -= 1
        if not self._readers and self._waiting:  # a writer waits for the last reader
            self._lock.acquire()
            try:
                self._cond.notify_all()
            finally:
                self._lock.release()

    def acquire_write(self):
        cdef unsigned long me = PyThread_get_thread_ident()
        self._lock.acquire()
        try:
            if not self._written and not self._readers and not self._turn:  # usual case
                self._written, self._writer, self._depth = True, me, 1
                return
            if self._written and self._writer == me:
                self._depth += 1
                return
            self._waiting += 1
            try:
                while self._written or self._readers or self._turn:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._written, self._writer, self._depth = True, me, 1
        finally:
            self._lock.release()

    def release_write(self):
        self._lock.acquire()
        try:
            self._depth -= 1
            if not self._depth:
                self._written = False
                self._turn = self._queued > 0
                if self._queued or self._waiting:
                    self._cond.notify_all()
        finally:
            self._lock.release()

    def reading(self):
        """A read section: ``with guard.reading(): ...``."""
        return _Section(self, _READ)

    def writing(self):
        """A write section."""
        return _Section(self, _WRITE)

    def fitting(self):
        """The section of one ``fit``; entering it while another thread fits raises."""
        if not self._fitting.acquire(blocking=False):
            where = (
                "in this thread (a callback cannot start another fit)"
                if self._fits and self._fitter == PyThread_get_thread_ident()
                else "in another thread"
            )
            raise RuntimeError(
                f"this model is already training {where}: one fit at a time"
                " per model (copy.deepcopy(model) gives an independent one)"
            )
        self._fits, self._fitter = True, PyThread_get_thread_ident()
        return _Section(self, _FIT)

    cdef _leave_fit(self):
        self._fits = False
        self._fitting.release()


cdef enum:
    _READ, _WRITE, _FIT


cdef class _Section:
    """A section of a guard's, entered and left once: what ``reading``, ``writing``
    and ``fitting`` return (the fit's lock is already held when it is made)."""
    cdef Guard guard
    cdef int kind
    cdef object token

    def __cinit__(self, Guard guard, int kind):
        self.guard, self.kind = guard, kind

    def __enter__(self):
        if self.kind == _READ:
            self.token = self.guard.acquire_read()
        elif self.kind == _WRITE:
            self.guard.acquire_write()
        return self

    def __exit__(self, *exc):
        if self.kind == _READ:
            self.guard.release_read(self.token)
        elif self.kind == _WRITE:
            self.guard.release_write()
        else:
            self.guard._leave_fit()
        return False
