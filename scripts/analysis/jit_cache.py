"""Cache the numba-compiled functions of umap-learn and pynndescent on disk.

Neither library asks numba to cache its functions, so every process that draws a UMAP map
compiled them again: ~15 s for a fit and ~10 s for a transform on 2 cores, more than the
demo's maps themselves (BENCHMARKS.md "UMAP maps"). :func:`cache_compiled` turns numba's
own on-disk cache on for their module-level functions before their first call, so the
machine code is compiled once per installation and loaded afterwards. numba keys the cache
on each source file's timestamp and on the CPU, and stores it in the package's
``__pycache__`` (or ``NUMBA_CACHE_DIR``), so an upgrade or another machine recompiles; the
code run, and therefore every result, is the same either way.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)

_done: set[str] = set()


def cache_compiled(packages=("umap", "pynndescent")) -> int:
    """Enable numba's disk cache for every jitted function defined at module level in the
    already imported ``packages``; returns how many functions were newly enabled."""
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    enabled = 0
    for name in [m for m in list(sys.modules) if m.split(".")[0] in packages and m not in _done]:
        _done.add(name)
        for obj in list(vars(sys.modules[name]).values()):
            if isinstance(obj, CPUDispatcher) and isinstance(obj._cache, NullCache):
                try:
                    obj.enable_caching()
                except RuntimeError as err:     # no writable cache location: compile as before
                    logger.info("numba disk cache not available (%s); compiling in memory", err)
                    _done.update(m for m in sys.modules if m.split(".")[0] in packages)
                    return enabled
                enabled += 1
    logger.debug("numba disk cache enabled for %d functions of %s", enabled, ", ".join(packages))
    return enabled
