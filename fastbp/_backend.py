"""Deferred loading of the compiled module.

``fastbp._core`` takes BLAS (sgemm, dgemm) from ``scipy.linalg.cython_blas``.
``import fastbp`` stays fast by loading the compiled module on first use (building
a model or calling a layer), and that first use stays light by loading
``scipy.linalg.cython_blas`` on its own: importing it the usual way runs
``scipy/linalg/__init__.py``, which imports all of ``scipy.linalg`` (about 120 ms
and 20 MB) for two function pointers. Where SciPy's layout is not the expected
one, the usual import is used.
"""

import importlib.machinery
import importlib.util
import os
import sys

_core = None
_blas = None  # the module loaded alone, kept alive: _core holds its function pointers
_BLAS_MODULE = "scipy.linalg.cython_blas"


def core():
    """Return the compiled module ``fastbp._core``, importing it on the first call."""
    global _core
    if _core is None:
        alone = _load_cython_blas_alone()
        try:
            from . import _core as module
        finally:
            if alone:
                # Registered only while _core takes its function pointers, so that a
                # later "import scipy.linalg" builds its package the usual way.
                del sys.modules[_BLAS_MODULE]
        _core = module
    return _core


def _load_cython_blas_alone():
    """Load ``scipy.linalg.cython_blas`` without its package; return whether it was."""
    global _blas
    if _BLAS_MODULE in sys.modules or "scipy.linalg" in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec("scipy")
        folder = os.path.join(os.path.dirname(spec.origin), "linalg")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "cython_blas" + suffix)
            if os.path.exists(path):
                break
        else:
            return False
        loader = importlib.machinery.ExtensionFileLoader(_BLAS_MODULE, path)
        blas_spec = importlib.util.spec_from_file_location(_BLAS_MODULE, path, loader=loader)
        module = importlib.util.module_from_spec(blas_spec)
        sys.modules[_BLAS_MODULE] = module
        loader.exec_module(module)
    except Exception:  # any surprise: leave it to the usual import
        sys.modules.pop(_BLAS_MODULE, None)
        return False
    _blas = module
    return True
