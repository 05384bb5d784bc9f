"""The embedded mock universe (``python -m scripts.mock``; DESIGN §4).

Simulated runs in the TNG layout (MockTNG-Fiducial, MockTNG-Compact at snapshots 84/91,
MockTNG-Cluster at 99), HSC-like galaxy images, an observed survey set with its catalogue,
X-ray cluster maps, and the ground truth behind every image. Entry point:
:func:`build_universe`.
"""
from scripts.mock.universe import build_universe

__all__ = ["build_universe"]
