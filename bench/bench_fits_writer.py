"""Benchmark: the mock's FITS writer (fitsio, :func:`scripts.mock.fits_io.write_hsc_cutout`)
against astropy.io.fits writing the same HSC-like cut-out (5 bands x image, mask and
variance HDUs, 25 header cards per band), the writer the mock used before.

    .venv/bin/python -m bench.bench_fits_writer [--n 50]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = ["G", "R", "I", "Z", "Y"]


def _astropy_write(path: Path, images, masks, variances, cards) -> None:
    from astropy.io import fits

    hdus = []
    for b, name in enumerate(BANDS):
        header = fits.Header([fits.Card("EXTNAME", f"SUBARU_HSC.{name}", "extension name"),
                              *(fits.Card(*c) for c in cards[b])])
        hdus.append(fits.PrimaryHDU(images[b], header) if b == 0 else fits.ImageHDU(images[b], header))
        hdus.append(fits.ImageHDU(masks[b], name=f"SUBARU_HSC.{name} MASK"))
        hdus.append(fits.ImageHDU(variances[b], name=f"SUBARU_HSC.{name} VARIANCE"))
    fits.HDUList(hdus).writeto(path, overwrite=True, output_verify="ignore")


def main(argv=None) -> dict:
    from astropy.io import fits

    from scripts.mock import fits_io

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="cut-outs written by each writer")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 96, 96))
    masks = rng.integers(0, 4, (5, 96, 96)).astype(np.int32)
    variances = rng.random((5, 96, 96)).astype(np.float32)
    cards = [[(f"KEY{i}", float(rng.normal()), "a comment") for i in range(25)] for _ in BANDS]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in (("astropy (baseline)", _astropy_write), ("fitsio (mock)", None)):
            start = time.perf_counter()
            for k in range(args.n):
                path = Path(tmp) / f"{k}_{len(times)}.fits"
                if write is None:
                    fits_io.write_hsc_cutout(path, BANDS, images, masks, variances, cards)
                else:
                    write(path, images, masks, variances, cards)
            times[name] = (time.perf_counter() - start) / args.n
        with fits.open(Path(tmp) / "0_0.fits") as a, fits.open(Path(tmp) / "0_1.fits") as b:
            same = all(x.name == y.name and np.array_equal(x.data, y.data) and x.data.dtype == y.data.dtype
                       for x, y in zip(a, b)) and len(a) == len(b)
    for name, t in times.items():
        print(f"{name:20s} {1000 * t:7.1f} ms per cut-out")
    ratio = times["astropy (baseline)"] / times["fitsio (mock)"]
    print(f"speed-up fitsio / astropy: {ratio:.1f}x; same HDU names, dtypes and pixels: {same}")
    return {"ms": {k: 1000 * v for k, v in times.items()}, "ratio": ratio, "same": same}


if __name__ == "__main__":
    main()
