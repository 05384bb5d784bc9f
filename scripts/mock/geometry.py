"""Viewing geometry: camera directions and projections of 3-D shapes and offsets.

Cameras are fixed directions in the simulation box shared by every object (like the named
cameras v0, v1, … of the real SKIRT mocks): up to four sit at the vertices of a regular
tetrahedron, more on a Fibonacci sphere. A camera looking along unit vector n has
image axes e1 (x, to the right) and e2 (y, up); angles on the image are measured from +x
towards +y (GalSim's convention), in degrees.
"""
from __future__ import annotations

import numpy as np

_TETRAHEDRON = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3.0)


def camera_directions(num: int) -> np.ndarray:
    """(num, 3) unit line-of-sight vectors of cameras v0…v{num−1}."""
    if num < 1:
        raise ValueError(f"number of projections must be ≥ 1, got {num}")
    if num <= 4:
        return _TETRAHEDRON[:num].copy()
    k = np.arange(num) + 0.5
    polar = np.arccos(1 - 2 * k / num)
    azim = np.pi * (1 + 5 ** 0.5) * k
    return np.stack([np.sin(polar) * np.cos(azim), np.sin(polar) * np.sin(azim), np.cos(polar)], axis=1)


def camera_basis(n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image axes (e1, e2) and line of sight n of a camera looking along ``n``."""
    n = np.asarray(n, dtype=float)
    n = n / np.linalg.norm(n)
    ref = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(ref, n)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    return e1, e2, n


def camera_angles(n) -> tuple[float, float]:
    """Polar angle and azimuth [deg] of a camera direction (header INCL/AZIM)."""
    n = np.asarray(n, dtype=float)
    return float(np.degrees(np.arccos(np.clip(n[2], -1, 1)))), float(np.degrees(np.arctan2(n[1], n[0])) % 360.0)


def project_ellipsoid(axes_matrix: np.ndarray, n) -> tuple[float, float]:
    """Projected axis ratio q ≤ 1 and major-axis angle [deg, 0–180) of a 3-D ellipsoid.

    ``axes_matrix`` is the 3×3 quadratic form A of the ellipsoid xᵀ A x = 1 in box
    coordinates; the projection along n is the Schur complement of A in camera coordinates.
    """
    e1, e2, los = camera_basis(n)
    basis = np.stack([e1, e2, los], axis=1)
    a = basis.T @ axes_matrix @ basis
    a2 = a[:2, :2] - np.outer(a[:2, 2], a[2, :2]) / a[2, 2]
    vals, vecs = np.linalg.eigh(a2)  # ascending: smallest eigenvalue ↔ major axis
    q = float(np.sqrt(vals[0] / vals[1]))
    major = vecs[:, 0]
    angle = float(np.degrees(np.arctan2(major[1], major[0])) % 180.0)
    return q, angle


def oblate_matrix(symmetry_axis, axis_ratio: float) -> np.ndarray:
    """Quadratic form of an oblate spheroid (radius 1, thickness ``axis_ratio``)."""
    s = np.asarray(symmetry_axis, dtype=float)
    s = s / np.linalg.norm(s)
    return np.eye(3) + (1.0 / axis_ratio ** 2 - 1.0) * np.outer(s, s)


def triaxial_matrix(rotation: np.ndarray, axis_ratios) -> np.ndarray:
    """Quadratic form of an ellipsoid with semi-axes (1, b/a, c/a) rotated by ``rotation``."""
    inv = np.diag(1.0 / np.asarray([1.0, *axis_ratios], dtype=float) ** 2)
    return rotation @ inv @ rotation.T


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3-D rotation matrix (from a random unit quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def inclination(spin, n) -> float:
    """Angle between a disk's spin axis and the line of sight [deg, 0 = face-on, 90 = edge-on]."""
    s = np.asarray(spin, dtype=float)
    c = abs(float(np.dot(s / np.linalg.norm(s), np.asarray(n) / np.linalg.norm(n))))
    return float(np.degrees(np.arccos(min(c, 1.0))))


def project_vector(v, n) -> tuple[float, float]:
    """Image-plane components (x, y) of a 3-D vector seen along ``n``."""
    e1, e2, _ = camera_basis(n)
    v = np.asarray(v, dtype=float)
    return float(v @ e1), float(v @ e2)
