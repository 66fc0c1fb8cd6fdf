"""Deferred loading of the compiled module.

``fastbp._core`` cimports BLAS from ``scipy.linalg.cython_blas``, and importing it
imports all of ``scipy.linalg`` (a few hundred milliseconds). ``import fastbp`` stays
fast by loading the compiled module on first use: building a model or calling a
layer, not importing the package.
"""
_core = None


def core():
    """Return the compiled module ``fastbp._core``, importing it on the first call."""
    global _core
    if _core is None:
        from . import _core as module

        _core = module
    return _core
