"""Turn model-space images (float, any number of bands) into 8-bit RGB pictures.

Used for the augmented-view grids (``log_images``) and the projector sprite. Images
entering the network are normalised floats (often negative, 1 to 5 bands), so each image
is stretched linearly between its 0.5th and 99.5th percentiles (all its bands together,
which keeps colours) to [0, 255]. Bands → display: 1 band gray; 2 bands their mean, gray;
3 or more bands the first three as R, G, B (the caller orders bands, e.g. i, r, g).
"""
from __future__ import annotations

import math

import numpy as np

#: Largest sprite side TensorBoard's projector accepts (pixels).
MAX_SPRITE_SIDE = 8192


def to_display(images: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """N×H×W or N×H×W×C floats → N×H×W×3 uint8, stretched per image (see module doc).

    NaNs become black; a constant image becomes black.
    """
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"expected N×H×W or N×H×W×C images, got shape {arr.shape}")
    channels = arr.shape[-1]
    if channels == 1:
        rgb = np.repeat(arr, 3, axis=-1)
    elif channels == 2:
        rgb = np.repeat(arr.mean(axis=-1, keepdims=True), 3, axis=-1)
    else:
        rgb = arr[..., :3]
    out = np.zeros(rgb.shape, dtype=np.uint8)
    for i, img in enumerate(rgb):
        finite = img[np.isfinite(img)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, [low_pct, high_pct])
        if not hi > lo:
            continue
        scaled = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
        out[i] = np.round(np.nan_to_num(scaled, nan=0.0) * 255.0).astype(np.uint8)
    return out


def image_grid(images: np.ndarray, n_cols: int | None = None, pad: int = 2) -> np.ndarray:
    """A near-square grid (H_grid×W_grid×3 uint8) of the images, separated by white lines.

    ``n_cols`` defaults to ceil(sqrt(N)); ``pad`` is the gap in pixels.
    """
    rgb = to_display(images)
    n, h, w, _ = rgb.shape
    cols = n_cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = rgb[k]
    return grid


def sprite(thumbnails: np.ndarray, max_side: int = MAX_SPRITE_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """The projector sprite: thumbnails tiled row-major on a ceil(sqrt(N))² square.

    Returns (sprite H×W×3 uint8, (cell width, cell height) in pixels). Thumbnails are
    shrunk when the sprite would exceed ``max_side`` pixels (TensorBoard's limit); empty
    cells after the last thumbnail stay black, as the projector expects.
    """
    from PIL import Image

    rgb = to_display(thumbnails)
    n, h, w, _ = rgb.shape
    side = math.ceil(math.sqrt(n))
    scale = min(1.0, max_side / (side * max(h, w)))
    cell_h, cell_w = max(1, int(h * scale)), max(1, int(w * scale))
    if (cell_h, cell_w) != (h, w):
        rgb = np.stack([
            np.asarray(Image.fromarray(t).resize((cell_w, cell_h), Image.Resampling.BILINEAR))
            for t in rgb
        ])
    canvas = np.zeros((side * cell_h, side * cell_w, 3), np.uint8)
    for k in range(n):
        r, c = divmod(k, side)
        canvas[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] = rgb[k]
    return canvas, (cell_w, cell_h)


def save_png(rgb: np.ndarray, path) -> None:
    """Write an H×W×3 uint8 array as a PNG file."""
    from PIL import Image

    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path, format="PNG")
