"""The embedded mock universe (``python -m scripts.mock``; DESIGN §4).

Simulated runs in the TNG layout (MockTNG-Fiducial, MockTNG-Compact at snapshots 78/84,
MockTNG-Cluster at 99), HSC-like galaxy images, an observed survey set with its catalogue,
X-ray cluster maps, and the ground truth behind every image. Entry point:
:func:`build_universe` (imported lazily, so rendering workers that only need
:mod:`scripts.mock.jobs` do not pay for pandas, SciPy and astropy.cosmology).
"""

__all__ = ["build_universe"]


def __getattr__(name):
    if name == "build_universe":
        from scripts.mock.universe import build_universe
        return build_universe
    raise AttributeError(f"module 'scripts.mock' has no attribute {name!r}")
