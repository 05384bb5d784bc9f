"""Benchmark: FITS band reader (fitsio) against the astropy readers.

Reads bands G, R, I of ``--n`` copies of two layouts:

* ``real15``: the real TNG/HSC mock (data/real_hsc_mock/…, 15 HDUs: G, R, I,
  Z, Y, each image + MASK + VARIANCE, G in the primary HDU), as in the survey archive;
* ``mock9``: its first 9 HDUs (G, R, I with MASK and VARIANCE), the layout the mock
  universe writes.

Three readers, timed in alternating rounds (machine-load drift hits all alike; the median
round is reported):

* ``new``: :func:`scripts.preprocessing.fits_bands.load_bands` (fitsio; validation, NaN checks,
  meta);
* ``old``: the astropy implementation, copied below (lazily loaded HDUList, every header
  parsed to index EXTNAMEs), same validation — the like-for-like baseline;
* ``naive``: plain ``fits.open`` + ``hdul[name].data`` (what a straightforward loop does,
  no validation).

* ``rev`` (with ``--rev REV``): ``load_bands`` of ``scripts/preprocessing/fits_bands.py``
  (``bands.py`` before its rename) as of git revision REV (e.g. ``dc4ab6f``, the
  hand-written header scanner fitsio replaced).

Before timing, every reader must give the cube and meta of ``new`` on both layouts.

    .venv/bin/python -m bench.bench_bands              # n=300 per layout, 3 rounds, < 1 min
    .venv/bin/python -m bench.bench_bands --n 2000 --rounds 5 --rev dc4ab6f
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

import config
from scripts.preprocessing import fits_bands as bands
from scripts.preprocessing import fits_file
from scripts.preprocessing.fits_bands import BandImage, check_band, meta_from_header
from scripts.preprocessing.fits_file import (BadImageError, _check_file, _check_mandatory,
                                             _data_end, _header_failure)

logger = logging.getLogger("bench.bench_bands")

REAL = config.real_hsc_mock_path
EXTNAMES = ("SUBARU_HSC.G", "SUBARU_HSC.R", "SUBARU_HSC.I")


# --------------------------------------------------------------------------- old reader
# The implementation replaced by the header scan (scripts/preprocessing/bands.py before
# this benchmark), kept here as the baseline. Validation helpers are shared (unchanged).


class _OldFits:
    def __init__(self, path):
        self.path = Path(path)
        self.size = _check_file(self.path)

    def __enter__(self):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                self.hdul = fits.open(self.path, memmap=False, lazy_load_hdus=True)
            except fits_file._astropy_read_errors() as exc:
                raise _header_failure(self.path, self.size, exc) from None
            try:
                self.names = [str(h.header.get("EXTNAME", "")).strip().upper()
                              for h in self.hdul]
                last_end = _data_end(self.hdul[-1]) if len(self.hdul) else 0
            except fits_file._astropy_read_errors() as exc:
                self.hdul.close()
                raise _header_failure(self.path, self.size, exc) from None
        if last_end > self.size:
            self.hdul.close()
            raise BadImageError(self.path, "truncated", f"needs {last_end} bytes")
        return self

    def __exit__(self, *exc_info):
        self.hdul.close()

    def index(self, extname):
        hits = [i for i, name in enumerate(self.names) if name == extname.strip().upper()]
        if len(hits) != 1:
            raise BadImageError(self.path, "missing_band" if not hits else "duplicate_band")
        return hits[0]

    def data(self, index, extname):
        hdu = self.hdul[index]
        _check_mandatory(self.path, hdu.header, extname)
        if _data_end(hdu) > self.size:
            raise BadImageError(self.path, "truncated")
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            data = hdu.data
        if data is None or data.ndim != 2:
            raise BadImageError(self.path, "wrong_shape")
        return data.astype(data.dtype.newbyteorder("="), copy=False)


def old_load_bands(path, extnames, nan_fill="median", max_nan_fraction=0.5) -> BandImage:
    """The previous ``load_bands``: same checks, astropy reader."""
    out, counts = [], []
    with _OldFits(path) as f:
        indices = [f.index(name) for name in extnames]
        for name, index in zip(extnames, indices):
            band = f.data(index, name)
            if out and band.shape != out[0].shape:
                raise BadImageError(path, "wrong_shape")
            band, n_bad = check_band(Path(path), name, band, nan_fill, max_nan_fraction)
            out.append(band)
            counts.append(n_bad)
        meta = meta_from_header(f.hdul[indices[0]].header, str(path), f.names[indices[0]])
    return BandImage(str(path), tuple(extnames), np.stack(out, axis=-1), tuple(counts), meta)


def naive_read(path, extnames) -> np.ndarray:
    """Plain astropy: open, index by name, stack."""
    with fits.open(path) as hdul:
        return np.stack([hdul[name].data for name in extnames], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- timing


def make_files(root: Path, n: int) -> dict[str, list[Path]]:
    """``n`` copies (real files, not links: each open reads its own inode) of each layout."""
    nine = root / "mock9_template.fits"
    with fits.open(REAL) as hdul:
        fits.HDUList([h.copy() for h in hdul[:9]]).writeto(nine)
    layouts = {}
    for name, template in (("real15", REAL), ("mock9", nine)):
        folder = root / name
        folder.mkdir()
        layouts[name] = []
        for i in range(n):
            target = folder / f"{i}_HSC_GRIZY.fits"
            shutil.copyfile(template, target)
            layouts[name].append(target)
    return layouts


def load_at_revision(rev: str, root: Path):
    """``load_bands`` of the FITS band reader at git revision ``rev``
    (scripts/preprocessing/fits_bands.py, called bands.py before its rename)."""
    for name in ("fits_bands.py", "bands.py"):
        shown = subprocess.run(["git", "show", f"{rev}:scripts/preprocessing/{name}"],
                               cwd=Path(__file__).resolve().parents[1], capture_output=True,
                               text=True)
        if shown.returncode == 0:
            break
    else:
        raise ValueError(f"--rev {rev}: no scripts/preprocessing/fits_bands.py or bands.py "
                         f"there ({shown.stderr.strip()})")
    source = shown.stdout
    path = root / f"bands_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"bands_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.load_bands


def check_equal(files: list[Path], readers: dict) -> None:
    """Every reader agrees with ``new`` on cube, repairs and meta (else the timing is moot)."""
    new = bands.load_bands(files[0], EXTNAMES)
    for name, read in readers.items():
        if name in ("new", "naive"):
            continue
        other = read(files[0], EXTNAMES)
        if not (np.array_equal(new.data, other.data) and repr(new.meta) == repr(other.meta)
                and new.n_repaired == other.n_repaired):
            raise SystemExit(f"readers new and {name} disagree on {files[0]}")
    np.testing.assert_array_equal(new.data, naive_read(files[0], EXTNAMES))


def time_reader(read, files) -> float:
    start = time.perf_counter()
    for path in files:
        read(path, EXTNAMES)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="files per layout")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--rev", help="also time the FITS band reader as of this git revision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    readers = {"new": bands.load_bands, "old": old_load_bands, "naive": naive_read}
    logger.info("band reader: G, R, I of %d files per layout, %d rounds (median), %d CPUs, "
                "load %.1f", args.n, args.rounds, os.cpu_count(), os.getloadavg()[0])
    with tempfile.TemporaryDirectory() as tmp:
        if args.rev:
            readers["rev"] = load_at_revision(args.rev, Path(tmp))
        layouts = make_files(Path(tmp), args.n)
        logger.info("%-7s %10s %10s %10s %10s %10s %12s", "layout", "new f/s", "old f/s",
                    "naive f/s", "rev f/s", "new/old", "new/naive" + ("  new/rev" if args.rev else ""))
        for layout, files in layouts.items():
            check_equal(files, readers)
            for read in readers.values():  # warm file cache and imports
                time_reader(read, files[:20])
            seconds = {name: [] for name in readers}
            for _ in range(args.rounds):
                for name, read in readers.items():
                    seconds[name].append(time_reader(read, files))
            rate = {name: len(files) / statistics.median(s) for name, s in seconds.items()}
            rev = rate.get("rev", float("nan"))
            logger.info("%-7s %10.0f %10.0f %10.0f %10.0f %9.2fx %11.2fx %8.2fx", layout,
                        rate["new"], rate["old"], rate["naive"], rev, rate["new"] / rate["old"],
                        rate["new"] / rate["naive"], rate["new"] / rev)
        logger.info("load after: %.1f", os.getloadavg()[0])


if __name__ == "__main__":
    main()
