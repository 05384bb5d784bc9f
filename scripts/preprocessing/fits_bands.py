"""Read image bands from FITS files by EXTNAME, and reject broken files with a reason.

One reader for every image dataset (SKIRT/HSC galaxy mocks, survey cut-outs, X-ray maps):

* Bands are found by their ``EXTNAME`` keyword, **the primary HDU included** (the real TNG
  HSC mocks store the G image in the primary HDU with ``EXTNAME = 'SUBARU_HSC.G'``).
  Matching ignores case and surrounding blanks. ``MASK`` / ``VARIANCE`` HDUs are never read
  unless asked for with :func:`read_band_planes`.
* Files are opened with fitsio (cfitsio), which walks every header and gives each HDU's
  name, type, dimensions and byte offsets; only the requested HDUs' data are read.
  Headers are parsed by astropy (``Header.fromstring`` of the stored bytes) and only when
  needed, so header values are astropy's; BSCALE/BZERO/BLANK are applied as astropy does.
  A file fitsio cannot open, or whose last bytes it does not reach (trailing garbage, a
  header cut short), is read through astropy (``fits.open(memmap=False,
  lazy_load_hdus=True)``) instead. Truncation is judged from the HDU offsets against the
  file size, since cfitsio itself reports a cut file as a missing extension or a read error.
* Every way a file can be unusable raises :class:`BadImageError` with a short ``reason``
  code (see :data:`BadImageError.REASONS`), so extract can skip the file, count skips by
  reason and write them to its report.
* Non-finite pixels (NaN, ±inf) in a partly bad band are repaired and counted
  (:attr:`BandImage.n_repaired`); a band that is entirely non-finite, or more than
  ``max_nan_fraction`` non-finite, rejects the file.

Units are whatever the file stores (nanomaggies for the HSC mocks); values are returned as
float32, shape ``(H, W, C)`` with the bands in the order requested.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import fitsio
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from numpy.lib.stride_tricks import sliding_window_view

logger = logging.getLogger(__name__)

#: FITS files are made of 2880-byte blocks (FITS standard 4.0, §3.1).
FITS_BLOCK = 2880
#: Every valid FITS file starts with this keyword (FITS standard 4.0, §4.4.1.1).
_FITS_MAGIC = b"SIMPLE  ="
#: Exceptions that astropy raises on corrupt input (header parsing, data decoding).
#: AttributeError included: astropy raises it on a trailing block that starts with END
#: ("'_BaseHDU' object has no attribute 'size'"), and one bad file must not stop a run.
_ASTROPY_READ_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, VerifyError,
                        UnicodeDecodeError, AttributeError)
#: Exceptions that fitsio raises on input it cannot read: cfitsio errors are OSError, and
#: fitsio raises UnicodeDecodeError when cfitsio's message quotes non-ASCII header bytes.
_FITSIO_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError)
_CARD = 80
_END_CARD = b"END" + b" " * 77
#: Keywords that make astropy rescale image data (as they stand in a card, 8 bytes).
_SCALING_KEYS = (b"BSCALE  ", b"BZERO   ", b"BLANK   ")
#: astropy's class names for fitsio's HDU types (messages name them as before).
_TABLE_TYPES = {"BINARY_TBL": "BinTableHDU", "ASCII_TBL": "TableHDU"}
#: Suffix of the extra planes that accompany an image band (HSC / SKIRT mock layout).
PLANE_SUFFIX = {"image": "", "mask": " MASK", "variance": " VARIANCE"}
#: How non-finite pixels are handled by :func:`load_bands`.
NAN_FILLS = ("median", "zero", "raise")


class BadImageError(Exception):
    """A FITS file that cannot give a usable image; ``reason`` says why in one word.

    Attributes
    ----------
    path : str
        The offending file.
    reason : str
        One of :data:`REASONS`; stable codes meant for counting and reports.
    detail : str
        Human-readable explanation (what was expected, what was found).
    """

    REASONS = (
        "not_found",          # no such file
        "not_a_regular_file", # a directory, a dangling symlink, a device, …
        "empty_file",         # zero bytes
        "not_fits",           # does not start with the SIMPLE card
        "truncated",          # shorter than its headers announce
        "unreadable_header",  # astropy cannot parse the header blocks
        "unreadable_data",    # header fine, data cannot be decoded
        "missing_band",       # a requested EXTNAME is absent
        "duplicate_band",     # a requested EXTNAME occurs twice
        "wrong_shape",        # no data, not 2-D, not numeric, or bands of different shapes
        "all_nan",            # a band without a single finite pixel
        "too_many_nan",       # a band with more than max_nan_fraction non-finite pixels
        "has_nan",            # non-finite pixels while nan_fill='raise'
        "constant",           # a band with one single value (e.g. an empty render)
        "band_count",         # a cube whose number of planes differs from its band list
        "band_order_unknown", # a cube without CUBE_BANDS or BAND0…/BANDS header keywords
        "pixel_scale_mismatch",  # band files of one object with different pixel scales
        "no_sky_position",    # neither a celestial WCS nor RA/DEC keys (sky matching)
    )

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        if reason not in self.REASONS:
            raise ValueError(f"unknown BadImageError reason {reason!r}; "
                             f"expected one of {self.REASONS}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # keep path/reason/detail through pickling (joblib workers)
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class BandImage:
    """Bands of one file: ``data`` (H, W, C) float32 plus what was repaired."""

    path: str
    extnames: tuple[str, ...]
    data: np.ndarray
    #: Non-finite pixels replaced, per band (same order as ``extnames``).
    n_repaired: tuple[int, ...] = field(default=())
    #: Header values of the first band (redshift, pixel scales), read in the same open.
    meta: "ImageMeta | None" = None
    #: With ``load_bands(variance=True)``: each band's VARIANCE plane (None where the file
    #: has none or it is unusable) and its header ``VARSC`` (NaN where absent).
    variances: tuple = field(default=())
    var_scales: tuple[float, ...] = field(default=())

    @property
    def repaired(self) -> bool:
        """True when at least one non-finite pixel was replaced."""
        return any(self.n_repaired)


@dataclass(frozen=True)
class ImageMeta:
    """Header values extract needs; NaN where the header lacks them.

    ``kpc_per_pixel`` comes from ``FOVKPC / NAXIS1``, else from ``CDELT1`` when ``CTYPE1``
    is ``pc`` or ``kpc`` (SKIRT convention); ``arcsec_per_pixel`` from ``FOVARC / NAXIS1``,
    else ``kpc_per_pixel / KPCARC``, else the celestial WCS (``CD1_1``/``CD2_1`` or
    ``CDELT1`` when ``CTYPE1`` starts with ``RA``).
    """

    path: str
    extname: str
    shape: tuple[int, int]          # (ny, nx) pixels
    redshift: float
    fov_kpc: float                  # field of view, physical kpc
    fov_arcsec: float               # field of view, arcsec
    kpc_per_arcsec: float           # angular scale at the object's redshift
    kpc_per_pixel: float
    arcsec_per_pixel: float


# --------------------------------------------------------------------------- opening


def _check_file(path: Path) -> int:
    """Existence, size and FITS signature; returns the file size in bytes."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise BadImageError(path, "not_a_regular_file",
                                f"dangling symlink to {os.readlink(path)}") from None
        raise BadImageError(path, "not_found", "no such file") from None
    except OSError as exc:
        raise BadImageError(path, "not_found", f"cannot stat file: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadImageError(path, "not_a_regular_file", f"{_file_kind(info.st_mode)}, not a file")
    size = info.st_size
    if size == 0:
        raise BadImageError(path, "empty_file", "file has 0 bytes")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_FITS_MAGIC))
    except OSError as exc:
        raise BadImageError(path, "not_found", f"cannot read file: {exc}") from None
    if head != _FITS_MAGIC:
        if len(head) < len(_FITS_MAGIC) and _FITS_MAGIC.startswith(head):
            raise BadImageError(path, "truncated", f"only {size} bytes")
        raise BadImageError(path, "not_fits",
                            f"does not start with 'SIMPLE  =' (first bytes {head!r})")
    return size


def _file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', … for a stat mode that is not a regular file."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _header_failure(path: Path, size: int, exc: Exception) -> BadImageError:
    """Classify an astropy failure while parsing headers: truncated or corrupt."""
    if size < FITS_BLOCK or size % FITS_BLOCK:
        return BadImageError(path, "truncated",
                             f"{size} bytes is not a whole number of {FITS_BLOCK}-byte FITS "
                             f"blocks; astropy: {exc}")
    return BadImageError(path, "unreadable_header", f"astropy: {type(exc).__name__}: {exc}")


def _data_end(hdu) -> int:
    """Byte offset where an HDU's data ends on disk.

    Plain HDUs: without the final block padding (tolerates writers that omit it).
    Tile-compressed images: ``size`` is the uncompressed size, so the on-disk span of the
    underlying table (padding included) is used.
    """
    info = hdu.fileinfo()
    if isinstance(hdu, fits.CompImageHDU):
        return int(info["datLoc"]) + int(info["datSpan"])
    return int(info["datLoc"]) + int(hdu.size)


def _check_mandatory(path: Path, header: fits.Header, extname: str) -> None:
    """BITPIX, NAXIS and NAXISn must be integers (FITS standard 4.0, §4.4.1)."""
    missing = [k for k in ("BITPIX", "NAXIS") if not isinstance(header.get(k), int)]
    if not missing:
        missing = [f"NAXIS{i}" for i in range(1, header["NAXIS"] + 1)
                   if not isinstance(header.get(f"NAXIS{i}"), int)]
    if missing:
        raise BadImageError(path, "unreadable_header",
                            f"HDU {extname!r} lacks the mandatory integer keyword(s) "
                            f"{', '.join(missing)}")


# --------------------------------------------------------------------------- scaling


def _dtype_for_bitpix(bitpix: int, bscale, bzero) -> np.dtype | None:
    """astropy's choice of dtype for scaled image data (``uint=True``)."""
    if bscale == 1:
        if bitpix == 8 and bzero == -128:
            return np.dtype("int8")
        for bits, dtype in ((16, "uint16"), (32, "uint32"), (64, "uint64")):
            if bitpix == bits and bzero == 1 << (bits - 1):
                return np.dtype(dtype)
    if bitpix > 16:
        return np.dtype("float64")
    if bitpix > 0:
        return np.dtype("float32")
    return None


def _scale_like_astropy(raw: np.ndarray, bitpix: int, header: fits.Header) -> np.ndarray:
    """Apply BSCALE/BZERO/BLANK to big-endian ``raw`` exactly as astropy's ImageHDU.data.

    Pseudo-unsigned integers (BSCALE = 1, BZERO = 2**(bits-1)) become uint16/32/64 and
    BZERO = -128 on bytes gives int8; other scaled integers become float32 (BITPIX ≤ 16)
    or float64, with pixels equal to a non-zero integer BLANK set to NaN.
    """
    bzero, bscale = header.get("BZERO", 0), header.get("BSCALE", 1)
    blank = header.get("BLANK")
    if blank is not None and not (isinstance(blank, (int, np.integer)) and bitpix > 0):
        blank = None  # astropy ignores a non-integer BLANK, and BLANK on float data
    if bzero == 0 and bscale == 1 and blank is None:
        return raw
    new_dtype = _dtype_for_bitpix(bitpix, bscale, bzero)
    if not (bzero == 0 and bscale == 1) and new_dtype is not None and new_dtype.kind == "u":
        data = np.array(raw, dtype=new_dtype)
        data -= np.uint64(1 << (new_dtype.itemsize * 8 - 1))
        return data
    blanks = None
    if blank is not None and bitpix > 0:
        blanks = raw.flat == blank
        if blanks.sum() < len(blanks) / 8:
            blanks = np.where(blanks)
    if new_dtype is not None:
        data = np.array(raw, dtype=new_dtype)
    else:
        data = raw if raw.flags.writeable else raw.copy()
    if bscale != 1:
        np.multiply(data, bscale, data)
    if bzero != 0:
        data += bzero
    if blank:
        data.flat[blanks] = np.nan
    return data


# --------------------------------------------------------------------------- opening


class _FitsBase:
    """HDU lookup by EXTNAME shared by both readers (``names``, ``last_end`` set by them)."""

    path: Path
    size: int
    names: list[str]
    last_end: int

    def _check_last_end(self) -> None:
        if self.last_end > self.size:
            raise BadImageError(self.path, "truncated",
                                f"HDU {len(self.names) - 1} needs {self.last_end} bytes, file "
                                f"has {self.size}")

    def index(self, extname: str) -> int:
        """HDU index of ``extname`` (case-insensitive), or BadImageError."""
        key = extname.strip().upper()
        hits = [i for i, name in enumerate(self.names) if name == key]
        if not hits:
            padded_end = -(-self.last_end // FITS_BLOCK) * FITS_BLOCK
            if self.size % FITS_BLOCK or self.size > padded_end:
                # astropy stops silently at a header cut short: the band may have been there
                raise BadImageError(self.path, "truncated",
                                    f"no HDU with EXTNAME {extname!r} among the complete HDUs; "
                                    f"the file ({self.size} bytes) ends inside an HDU after "
                                    f"byte {self.last_end}")
            present = [n for n in self.names if n] or ["<none>"]
            raise BadImageError(self.path, "missing_band",
                                f"no HDU with EXTNAME {extname!r}; EXTNAMEs present: "
                                f"{', '.join(present)}")
        if len(hits) > 1:
            raise BadImageError(self.path, "duplicate_band",
                                f"EXTNAME {extname!r} occurs in HDUs {hits}")
        return hits[0]

    @staticmethod
    def _check_array(path: Path, data: np.ndarray | None, extname: str, ndim: int = 2) -> np.ndarray:
        """``ndim``-D real numbers in native byte order, or BadImageError (wrong_shape)."""
        if data is None:
            raise BadImageError(path, "wrong_shape", f"HDU {extname!r} has no data")
        if data.ndim != ndim:
            raise BadImageError(path, "wrong_shape",
                                f"HDU {extname!r} has shape {data.shape}; expected "
                                + ("a 2-D image" if ndim == 2 else f"{ndim} axes"))
        if not (np.issubdtype(data.dtype, np.number) and not np.iscomplexobj(data)):
            raise BadImageError(path, "wrong_shape",
                                f"HDU {extname!r} holds {data.dtype}, not real numbers")
        return data.astype(data.dtype.newbyteorder("="), copy=False)


def _fitsio_message(exc: Exception) -> str:
    """First line of a fitsio error (cfitsio appends its whole error stack)."""
    return f"fitsio: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


class _FitsioCannotRead(Exception):
    """fitsio cannot read this file (or not all of it); astropy reads it instead."""


class _FitsioFits(_FitsBase):
    """Reader for the files cfitsio understands: HDUs located and image data read by fitsio.

    Opening walks every header (cfitsio), which gives each HDU's name, type, dimensions and
    byte offsets; only the requested HDUs' data are read. Headers are parsed by astropy
    (``Header.fromstring`` of the raw header bytes) only when needed (meta, header values,
    BSCALE/BZERO/BLANK), so header values equal astropy's. Scaled images are read raw and
    scaled by :func:`_scale_like_astropy` (cfitsio ignores BLANK and returns other dtypes).
    """

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self._handle = None
        self._raw: dict[int, bytes] = {}
        self._headers: dict[int, fits.Header] = {}
        try:
            self.fits = fitsio.FITS(str(path))
        except _FITSIO_ERRORS as exc:
            raise _FitsioCannotRead(_fitsio_message(exc)) from None
        try:
            self.hdus = list(self.fits)
            self.names = [h.get_extname().strip().upper() for h in self.hdus]
            self.offsets = [h.get_offsets() for h in self.hdus]
            padded_end = self.offsets[-1]["data_end"]
            if padded_end < size:  # astropy's reaction depends on what the extra bytes are
                raise _FitsioCannotRead(f"fitsio stops at byte {padded_end} of {size}")
            self.last_end = padded_end if padded_end == size else self._unpadded_end(-1)
        except _FITSIO_ERRORS as exc:
            self.close()
            raise _FitsioCannotRead(_fitsio_message(exc)) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.fits.close()
        if self._handle is not None:
            self._handle.close()

    def _raw_header(self, index: int) -> bytes:
        """Header blocks of HDU ``index`` as stored (END card and padding included)."""
        if index not in self._raw:
            if self._handle is None:
                self._handle = open(self.path, "rb")
            start = self.offsets[index]["header_start"]
            self._handle.seek(start)
            self._raw[index] = self._handle.read(self.offsets[index]["data_start"] - start)
        return self._raw[index]

    def _cards(self, index: int):
        """The 80-character cards of HDU ``index`` up to its END card (bytes)."""
        raw = self._raw_header(index)
        for pos in range(0, len(raw), _CARD):
            card = raw[pos:pos + _CARD]
            if card == _END_CARD:
                return
            yield card

    def _unpadded_end(self, index: int) -> int:
        """Where HDU ``index``'s data ends without block padding (FITS standard 4.0, §4.4.1):
        ``|BITPIX| × GCOUNT × (PCOUNT + NAXIS1 × … × NAXISn) / 8`` bytes after its header."""
        index %= len(self.hdus)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                header = fits.Header.fromstring(self._raw_header(index))
                naxis = header["NAXIS"]
                size = abs(header["BITPIX"]) * header.get("GCOUNT", 1) * (
                    header.get("PCOUNT", 0) + math.prod(header[f"NAXIS{n}"]
                                                        for n in range(1, naxis + 1))) // 8
            except (*_ASTROPY_READ_ERRORS, ArithmeticError) as exc:
                raise _FitsioCannotRead(f"size of HDU {index}: {exc}") from None
        return self.offsets[index]["data_start"] + (size if naxis else 0)

    def header(self, index: int) -> fits.Header:
        if index not in self._headers:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if self.hdus[index].get_exttype() == "IMAGE_HDU" and self.hdus[index].is_compressed():
                    # on disk a BINTABLE header: astropy translates it to the image's
                    with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
                        header = hdul[index].header.copy()
                else:
                    header = fits.Header.fromstring(self._raw_header(index))
                if index == 0 and len(self.hdus) > 1:
                    # astropy's HDUList.update_extend(), applied on open
                    if "EXTEND" in header:
                        if not header["EXTEND"]:
                            header["EXTEND"] = True
                    elif header["NAXIS"] == 0:
                        header.set("EXTEND", True, after="NAXIS")
                    else:
                        header.set("EXTEND", True, after=f"NAXIS{header['NAXIS']}")
            for w in caught:
                logger.debug("%s: astropy warning: %s", self.path, w.message)
            self._headers[index] = header
        return self._headers[index]

    def header_value(self, index: int, keyword: str) -> Any:
        """Value of one keyword of HDU ``index`` (None if absent), parsing only its card
        unless the header is parsed already (a whole header costs ~1 ms in astropy)."""
        if index in self._headers or self.hdus[index].is_compressed():
            return self.header(index).get(keyword)
        key = keyword.upper().encode("ascii").ljust(8)
        for card in self._cards(index):
            if card[:8] == key and card[8:10] == b"= ":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        return fits.Card.fromstring(card.decode("ascii")).value
                    except _ASTROPY_READ_ERRORS:
                        return None
        return None

    def data(self, index: int, extname: str, ndim: int = 2) -> np.ndarray:
        """The ``ndim``-D numeric data of HDU ``index``, native byte order."""
        hdu = self.hdus[index]
        kind = hdu.get_exttype()
        if kind != "IMAGE_HDU":
            raise BadImageError(self.path, "wrong_shape",
                                f"HDU {extname!r} is a {_TABLE_TYPES.get(kind, kind)}, not an image")
        shape = tuple(hdu.get_dims())
        if not shape:
            return self._check_array(self.path, None, extname, ndim)
        if len(shape) != ndim:  # astropy would read it all only to fail the same test
            raise BadImageError(self.path, "wrong_shape",
                                f"HDU {extname!r} has shape {shape}; expected "
                                + ("a 2-D image" if ndim == 2 else f"{ndim} axes"))
        scaled = not hdu.is_compressed() and any(card[:8] in _SCALING_KEYS
                                                 for card in self._cards(index))
        header = None
        if scaled:  # astropy reads these keywords when it opens the HDU: they must parse
            header = self.header(index)
            try:
                for key in _SCALING_KEYS:
                    header.get(key.decode().strip())
            except _ASTROPY_READ_ERRORS as exc:
                raise BadImageError(self.path, "unreadable_header",
                                    f"HDU {extname!r}: {type(exc).__name__}: {exc}") from None
        try:
            hdu.ignore_scaling = scaled
            data = hdu.read()
        except _FITSIO_ERRORS as exc:
            raise BadImageError(self.path, "unreadable_data",
                                f"HDU {extname!r}: {_fitsio_message(exc)}") from None
        if scaled:
            data = _scale_like_astropy(data, hdu.get_info()["img_type"], header)
        return self._check_array(self.path, data, extname, ndim)


class _AstropyFits(_FitsBase):
    """Reader for files the scanner leaves alone: astropy, lazily, HDUs indexed by EXTNAME."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.names: list[str] = []
        self.last_end = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.hdul = fits.open(self.path, memmap=False, lazy_load_hdus=True)
            except _ASTROPY_READ_ERRORS as exc:
                raise _header_failure(self.path, self.size, exc) from None
            try:
                # Iterating a lazily loaded HDUList parses each header and skips its data.
                self.names = [str(h.header.get("EXTNAME", "")).strip().upper()
                              for h in self.hdul]
                self.last_end = _data_end(self.hdul[-1]) if len(self.hdul) else 0
            except _ASTROPY_READ_ERRORS as exc:
                self.hdul.close()
                raise _header_failure(self.path, self.size, exc) from None
        for w in caught:
            logger.debug("%s: astropy warning: %s", self.path, w.message)

    def close(self) -> None:
        self.hdul.close()

    def header(self, index: int) -> fits.Header:
        return self.hdul[index].header

    def header_value(self, index: int, keyword: str) -> Any:
        return self.hdul[index].header.get(keyword)

    def data(self, index: int, extname: str, ndim: int = 2) -> np.ndarray:
        """The ``ndim``-D numeric data of HDU ``index``, native byte order."""
        hdu = self.hdul[index]
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            raise BadImageError(self.path, "wrong_shape",
                                f"HDU {extname!r} is a {type(hdu).__name__}, not an image")
        _check_mandatory(self.path, hdu.header, extname)
        if _data_end(hdu) > self.size:
            raise BadImageError(self.path, "truncated",
                                f"data of HDU {extname!r} ends at byte {_data_end(hdu)}, file "
                                f"has {self.size}")
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                data = hdu.data
            except _ASTROPY_READ_ERRORS as exc:
                raise BadImageError(self.path, "unreadable_data",
                                    f"HDU {extname!r}: {type(exc).__name__}: {exc}") from None
        return self._check_array(self.path, data, extname, ndim)


class _Fits:
    """Open a FITS file and index its HDUs by EXTNAME (a context manager).

    Yields a :class:`_FitsioFits` when fitsio reads the whole file, else an
    :class:`_AstropyFits`; both raise the same :class:`BadImageError` reasons.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.size = _check_file(self.path)
        self._reader: _FitsioFits | _AstropyFits | None = None

    def __enter__(self) -> _FitsioFits | _AstropyFits:
        try:
            reader = _FitsioFits(self.path, self.size)
        except _FitsioCannotRead as why:
            logger.debug("%s: read through astropy (%s)", self.path, why)
            reader = _AstropyFits(self.path, self.size)
        try:
            reader._check_last_end()
        except BadImageError:
            reader.close()
            raise
        self._reader = reader
        return reader

    def __exit__(self, *exc_info) -> None:
        if self._reader is not None:
            self._reader.close()


# --------------------------------------------------------------------------- repair


def fill_nonfinite(band: np.ndarray, how: str = "median") -> tuple[np.ndarray, int]:
    """Replace non-finite pixels of a 2-D band; returns (filled copy, number replaced).

    ``how='median'``: each bad pixel takes the median of the finite pixels in its 3×3
    neighbourhood, repeated outward (pixels filled in one pass feed the next) for up to
    ``max(H, W)`` passes; anything still unfilled becomes 0. ``how='zero'``: bad pixels
    become 0 (the sky level of a sky-subtracted image).
    """
    if how not in ("median", "zero"):
        raise ValueError(f"how must be 'median' or 'zero', got {how!r}")
    out = np.array(band, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return out, 0
    if how == "zero":
        out[bad] = 0.0
        return out, n_bad
    out[bad] = np.nan
    for _ in range(max(out.shape)):
        ys, xs = np.nonzero(np.isnan(out))
        if ys.size == 0:
            break
        padded = np.pad(out, 1, constant_values=np.nan)
        windows = sliding_window_view(padded, (3, 3))[ys, xs].reshape(ys.size, 9)
        has_finite = np.isfinite(windows).any(axis=1)
        if not has_finite.any():
            break
        out[ys[has_finite], xs[has_finite]] = np.nanmedian(windows[has_finite], axis=1)
    out[np.isnan(out)] = 0.0
    return out, n_bad


def _check_band(path: Path, extname: str, band: np.ndarray, nan_fill: str,
                max_nan_fraction: float) -> tuple[np.ndarray, int]:
    """Validate one band and return it as float32 with non-finite pixels repaired."""
    with np.errstate(over="ignore", invalid="ignore"):
        band32 = band.astype(np.float32)
    finite = np.isfinite(band32)
    if not np.array_equal(finite, np.isfinite(band)):
        # Finite values beyond float32 range: in practice data read at a wrong offset.
        raise BadImageError(path, "unreadable_data",
                            f"band {extname!r}: values beyond the float32 range "
                            f"(max |value| {np.nanmax(np.abs(band[np.isfinite(band)])):.3g}); "
                            "corrupt header or data?")
    band = band32
    n_bad = band.size - int(finite.sum())
    if n_bad == band.size:
        raise BadImageError(path, "all_nan", f"band {extname!r}: no finite pixel")
    if n_bad:
        fraction = n_bad / band.size
        if fraction > max_nan_fraction:
            raise BadImageError(path, "too_many_nan",
                                f"band {extname!r}: {fraction:.1%} non-finite pixels, more than "
                                f"max_nan_fraction={max_nan_fraction:.1%}")
        if nan_fill == "raise":
            raise BadImageError(path, "has_nan", f"band {extname!r}: {n_bad} non-finite pixels")
    values = band[finite] if n_bad else band
    if values.min() == values.max():
        raise BadImageError(path, "constant",
                            f"band {extname!r}: every finite pixel equals {values.flat[0]!r}")
    if n_bad:
        band = fill_nonfinite(band, nan_fill)[0].astype(np.float32)
        logger.debug("%s: band %s: repaired %d non-finite pixels (%s)", path, extname, n_bad,
                     nan_fill)
    return band, n_bad


# --------------------------------------------------------------------------- public API


def load_bands(path: str | os.PathLike, extnames: Sequence[str], *, nan_fill: str = "median",
               max_nan_fraction: float = 0.5,
               shape: tuple[int, int] | None = None, variance: bool = False,
               bare_planes: bool = False) -> BandImage:
    """Read the image HDUs named ``extnames`` into one (H, W, C) float32 cube.

    Parameters
    ----------
    path : FITS file.
    extnames : EXTNAME of each band, in channel order (case-insensitive; the primary HDU
        counts like any other).
    nan_fill : ``'median'`` (local 3×3 median of finite neighbours), ``'zero'``, or
        ``'raise'`` (any non-finite pixel rejects the file with reason ``has_nan``).
    max_nan_fraction : a band with a larger fraction of non-finite pixels is rejected
        (``too_many_nan``); an entirely non-finite band is always rejected (``all_nan``).
    shape : expected (H, W); ``None`` accepts any shape common to all bands.
    variance : also read each band's ``EXTNAME VARIANCE`` plane and ``VARSC`` header value
        in the same open (:attr:`BandImage.variances`, :attr:`BandImage.var_scales`; the
        sky noise that pads crops). A missing or unusable plane is None, never an error.
    bare_planes : a file of one band (HSC cutout service): when ``EXTNAME VARIANCE`` is
        absent, the plane is the HDU named ``VARIANCE``.

    Raises
    ------
    BadImageError : with ``reason`` in :data:`BadImageError.REASONS`.
    """
    if isinstance(extnames, str) or len(extnames) == 0:
        raise ValueError(f"extnames must be a non-empty sequence of EXTNAMEs, got {extnames!r}")
    if nan_fill not in NAN_FILLS:
        raise ValueError(f"nan_fill must be one of {NAN_FILLS}, got {nan_fill!r}")
    path = Path(path)
    bands, counts = [], []
    with _Fits(path) as f:
        indices = [f.index(name) for name in extnames]  # all missing bands before any data
        for name, index in zip(extnames, indices):
            band = f.data(index, name)
            if bands and band.shape != bands[0].shape:
                raise BadImageError(path, "wrong_shape",
                                    f"band {name!r} has shape {band.shape}, band "
                                    f"{extnames[0]!r} has {bands[0].shape}")
            if shape is not None and band.shape != tuple(shape):
                raise BadImageError(path, "wrong_shape",
                                    f"band {name!r} has shape {band.shape}; "
                                    f"expected {tuple(shape)}")
            band, n_bad = _check_band(path, name, band, nan_fill, max_nan_fraction)
            bands.append(band)
            counts.append(n_bad)
        meta = meta_from_header(f.header(indices[0]), str(path), f.names[indices[0]])
        planes, scales = (_variance_planes(f, extnames, indices, bands[0].shape, bare_planes)
                          if variance else ((), ()))
    data = np.stack(bands, axis=-1).astype(np.float32, copy=False)
    return BandImage(str(path), tuple(extnames), data, tuple(counts), meta, planes, scales)


def _plane_name(f, extname: str, plane: str, bare: bool) -> str:
    """Upper-case EXTNAME of ``extname``'s ``plane`` in an open file: ``EXTNAME MASK`` etc.,
    or with ``bare`` and that HDU absent, ``MASK`` / ``VARIANCE`` alone."""
    key = (extname + PLANE_SUFFIX[plane]).strip().upper()
    if bare and key not in f.names:
        return PLANE_SUFFIX[plane].strip().upper() or key
    return key


def _variance_planes(f, extnames: Sequence[str], indices: Sequence[int],
                     shape: tuple[int, ...], bare: bool = False) -> tuple[tuple, tuple[float, ...]]:
    """(VARIANCE plane or None, VARSC or NaN) per band of an open file."""
    planes, scales = [], []
    for name, index in zip(extnames, indices):
        key = _plane_name(f, name, "variance", bare)
        plane = None
        if f.names.count(key) == 1:
            try:
                plane = f.data(f.names.index(key), key)
            except BadImageError as err:
                logger.debug("%s: variance plane %s unusable (%s); sky noise from the band",
                             f.path, key, err.detail)
            if plane is not None and plane.shape != tuple(shape):
                logger.debug("%s: variance plane %s has shape %s, band %s", f.path, key,
                             plane.shape, shape)
                plane = None
        planes.append(plane)
        scales.append(header_float(f.header_value(index, "VARSC")) if plane is not None else math.nan)
    return tuple(planes), tuple(scales)


def read_bands(path: str | os.PathLike, extnames: Sequence[str], **kwargs) -> np.ndarray:
    """(H, W, C) float32 bands of ``path`` by EXTNAME; see :func:`load_bands` for options."""
    return load_bands(path, extnames, **kwargs).data


def read_band_planes(path: str | os.PathLike, extname: str,
                     planes: Iterable[str] = ("image", "mask", "variance"),
                     bare_planes: bool = False) -> dict[str, np.ndarray]:
    """Image, mask and/or variance planes of one band, as stored (no repair).

    The planes live in HDUs ``EXTNAME``, ``EXTNAME + ' MASK'`` and
    ``EXTNAME + ' VARIANCE'`` (HSC / SKIRT mock layout). Returns ``{plane: array}`` with
    the image and variance as float32 and the mask as stored (an integer bit mask). With
    ``bare_planes`` (a file of one band) an absent ``EXTNAME MASK`` falls back to ``MASK``.
    """
    planes = tuple(planes)
    unknown = [p for p in planes if p not in PLANE_SUFFIX]
    if unknown:
        raise ValueError(f"unknown planes {unknown}; expected some of {tuple(PLANE_SUFFIX)}")
    out: dict[str, np.ndarray] = {}
    with _Fits(path) as f:
        for plane in planes:
            name = _plane_name(f, extname, plane, bare_planes) if plane != "image" else extname
            data = f.data(f.index(name), name)
            out[plane] = data if plane == "mask" else data.astype(np.float32, copy=False)
    shapes = {p: a.shape for p, a in out.items()}
    if len(set(shapes.values())) > 1:
        raise BadImageError(path, "wrong_shape", f"planes of {extname!r} differ in shape: {shapes}")
    return out


def list_extnames(path: str | os.PathLike) -> list[str]:
    """EXTNAME of every HDU in file order (upper-case; '' where an HDU has none)."""
    with _Fits(path) as f:
        return list(f.names)


def read_header_values(path: str | os.PathLike, keys: Sequence[str],
                       extname: str | None = None) -> dict[str, Any]:
    """``{key: value}`` from the header of HDU ``extname`` (default: primary); None if absent."""
    with _Fits(path) as f:
        header = f.header(0 if extname is None else f.index(extname))
        return {key: header.get(key) for key in keys}


def header_float(value: Any) -> float:
    """A header value as a finite float, NaN when absent, non-numeric or not finite."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def meta_from_header(header: Mapping[str, Any], path: str = "", extname: str = "") -> ImageMeta:
    """:class:`ImageMeta` from a FITS header (see the class for the rules; observed
    cut-outs without FOVARC take ``arcsec_per_pixel`` from their celestial WCS)."""
    nx, ny = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
    fov_kpc = header_float(header.get("FOVKPC", header.get("FOVSIZE")))
    fov_arcsec = header_float(header.get("FOVARC"))
    kpc_per_arcsec = header_float(header.get("KPCARC"))
    kpc_per_pixel = fov_kpc / nx if nx else math.nan
    if not math.isfinite(kpc_per_pixel):
        ctype = str(header.get("CTYPE1", "")).strip().lower()
        scale = {"pc": 1e-3, "kpc": 1.0}.get(ctype)
        kpc_per_pixel = abs(header_float(header.get("CDELT1"))) * scale if scale else math.nan
    arcsec_per_pixel = fov_arcsec / nx if nx else math.nan
    if not math.isfinite(arcsec_per_pixel) and kpc_per_arcsec > 0:
        arcsec_per_pixel = kpc_per_pixel / kpc_per_arcsec
    if not math.isfinite(arcsec_per_pixel):
        arcsec_per_pixel = wcs_arcsec_per_pixel(header)
    return ImageMeta(path=path, extname=extname, shape=(ny, nx),
                     redshift=header_float(header.get("REDSHIFT")), fov_kpc=fov_kpc,
                     fov_arcsec=fov_arcsec, kpc_per_arcsec=kpc_per_arcsec,
                     kpc_per_pixel=kpc_per_pixel, arcsec_per_pixel=arcsec_per_pixel)


def read_image_meta(path: str | os.PathLike, extname: str | None = None) -> ImageMeta:
    """Redshift, field of view and pixel scales of one image HDU (default: primary)."""
    with _Fits(path) as f:
        index = 0 if extname is None else f.index(extname)
        return meta_from_header(f.header(index), str(path), f.names[index])


# --------------------------------------------------------------------------- other layouts
#: Relative difference of pixel scales above which band files of one object disagree.
PIXEL_SCALE_RTOL = 1e-3


def wcs_arcsec_per_pixel(header: Mapping[str, Any]) -> float:
    """Pixel scale [arcsec] along axis 1 of a celestial WCS (``CTYPE1`` = ``RA---…``):
    ``hypot(CD1_1, CD2_1)`` or ``|CDELT1|`` in degrees × 3600; NaN without one."""
    if not str(header.get("CTYPE1", "")).strip().upper().startswith("RA"):
        return math.nan
    cd11, cd21 = header_float(header.get("CD1_1")), header_float(header.get("CD2_1"))
    if math.isfinite(cd11) or math.isfinite(cd21):
        scale = math.hypot(cd11 if math.isfinite(cd11) else 0.0, cd21 if math.isfinite(cd21) else 0.0)
    else:
        scale = abs(header_float(header.get("CDELT1")))
    return scale * 3600.0 if scale > 0 else math.nan


def cube_band_order(header: Mapping[str, Any], n_planes: int) -> tuple[str, ...] | None:
    """Band of each cube plane from the header: ``BAND0``, ``BAND1``, … (Legacy Survey), else
    ``BANDS`` (``'g,r,z'`` or ``'grz'``); None when the header says neither."""
    numbered = []
    while header.get(f"BAND{len(numbered)}") is not None:
        numbered.append(str(header[f"BAND{len(numbered)}"]).strip())
    if numbered:
        return tuple(numbered)
    bands = header.get("BANDS")
    if bands is None or not str(bands).strip():
        return None
    text = str(bands).strip()
    parts = [p.strip() for p in text.split(",")] if "," in text else list(text.replace(" ", ""))
    return tuple(parts)


def _cube_index(f, path: Path, extname: str | None) -> int:
    """Index of the HDU holding the cube: ``extname`` if given, else the first 3-axis HDU."""
    if extname is not None:
        return f.index(extname)
    naxes = [f.header_value(i, "NAXIS") for i in range(len(f.names))]
    for i, n in enumerate(naxes):
        if n == 3:
            return i
    raise BadImageError(path, "wrong_shape",
                        f"no HDU holds a (bands, H, W) cube; NAXIS of each HDU: {naxes}")


def load_cube(path: str | os.PathLike, filters: Sequence[str],
              cube_bands: Sequence[str] | None = None, *, extname: str | None = None,
              nan_fill: str = "median", max_nan_fraction: float = 0.5) -> BandImage:
    """Read the bands ``filters`` from one HDU holding a (bands, H, W) cube (Legacy Survey,
    DES cut-outs) into (H, W, C) float32.

    Parameters
    ----------
    filters : bands wanted, in channel order; matched to the plane bands ignoring case.
    cube_bands : band of each plane in plane order (params ``CUBE_BANDS``); None reads it
        from the header (:func:`cube_band_order`).
    extname : EXTNAME of the cube HDU; None takes the first HDU with three axes.

    Raises
    ------
    BadImageError : the reasons of :func:`load_bands`, plus ``band_count`` (planes and
        band list differ in length), ``band_order_unknown`` (no band list anywhere) and
        ``missing_band`` (a wanted band is not among the planes).
    """
    if isinstance(filters, str) or len(filters) == 0:
        raise ValueError(f"filters must be a non-empty sequence of band names, got {filters!r}")
    if nan_fill not in NAN_FILLS:
        raise ValueError(f"nan_fill must be one of {NAN_FILLS}, got {nan_fill!r}")
    path = Path(path)
    with _Fits(path) as f:
        index = _cube_index(f, path, extname)
        name = f.names[index] or f"HDU {index}"
        header = f.header(index)
        n_planes = header.get("NAXIS3")
        source = "extract.CUBE_BANDS"
        order = tuple(cube_bands) if cube_bands is not None else None
        if order is None:
            order, source = cube_band_order(header, n_planes or 0), "the header"
        if order is None:
            raise BadImageError(path, "band_order_unknown",
                                f"cube {name!r} has {n_planes} planes but neither BAND0, BAND1, … "
                                "nor BANDS in its header; give the plane order in "
                                "extract.CUBE_BANDS")
        if len(order) != n_planes:
            raise BadImageError(path, "band_count",
                                f"cube {name!r} has {n_planes} planes but {source} lists "
                                f"{len(order)} bands {list(order)}")
        upper = [b.strip().upper() for b in order]
        missing = [b for b in filters if b.strip().upper() not in upper]
        if missing:
            raise BadImageError(path, "missing_band",
                                f"cube {name!r} has no plane for band(s) {missing}; its planes "
                                f"are {list(order)} (from {source})")
        repeated = sorted({b for b in upper if upper.count(b) > 1})
        if repeated:
            raise BadImageError(path, "duplicate_band",
                                f"cube {name!r}: band(s) {repeated} name more than one plane")
        cube = f.data(index, name, ndim=3)
    bands, counts = [], []
    for band in filters:
        plane = upper.index(band.strip().upper())
        data, n_bad = _check_band(path, f"{name}[{plane}] ({band})", cube[plane], nan_fill,
                                  max_nan_fraction)
        bands.append(data)
        counts.append(n_bad)
    meta = meta_from_header(header, str(path), f.names[index])
    data = np.stack(bands, axis=-1).astype(np.float32, copy=False)
    return BandImage(str(path), tuple(f"{name}[{upper.index(b.strip().upper())}]" for b in filters),
                     data, tuple(counts), meta, (None,) * len(filters),
                     (math.nan,) * len(filters))


def load_band_files(paths: Sequence[str | os.PathLike | None], filters: Sequence[str],
                    extnames: Sequence[str], *, variance: bool = False, nan_fill: str = "median",
                    max_nan_fraction: float = 0.5, name: str = "") -> BandImage:
    """Read one object stored as one file per band (HSC-SSP cutout service: an empty primary
    HDU, then IMAGE, MASK and VARIANCE) into (H, W, C) float32.

    ``paths[i]`` holds band ``filters[i]`` in HDU ``extnames[i]``; None where the object
    has no file for that band. ``name`` labels the object in messages.

    Raises
    ------
    BadImageError : ``missing_band`` (a band without a file, or without its HDU),
        ``wrong_shape`` (band files of different shapes), ``pixel_scale_mismatch`` (band
        files with different pixel scales), and every reason of :func:`load_bands`, the
        detail naming the band and file.
    """
    absent = [b for b, p in zip(filters, paths) if p is None]
    if absent:
        present = [f"{b}: {os.path.basename(p)}" for b, p in zip(filters, paths) if p is not None]
        raise BadImageError(name, "missing_band",
                            f"no file for band(s) {absent}; files present: "
                            f"{', '.join(present) or '<none>'}")
    loaded = []
    for band, path, ext in zip(filters, paths, extnames):
        try:
            loaded.append(load_bands(path, [ext], nan_fill=nan_fill,
                                     max_nan_fraction=max_nan_fraction, variance=variance,
                                     bare_planes=True))
        except BadImageError as err:
            raise BadImageError(err.path, err.reason, f"band {band} ({os.path.basename(path)}): "
                                                      f"{err.detail}") from None
    first = loaded[0]
    for band, image in zip(filters[1:], loaded[1:]):
        if image.data.shape != first.data.shape:
            raise BadImageError(image.path, "wrong_shape",
                                f"band {band} ({os.path.basename(image.path)}) is "
                                f"{image.data.shape[:2]} pixels, band {filters[0]} "
                                f"({os.path.basename(first.path)}) is {first.data.shape[:2]}")
        a, b = first.meta.arcsec_per_pixel, image.meta.arcsec_per_pixel
        if math.isfinite(a) != math.isfinite(b) or (
                math.isfinite(a) and abs(a - b) > PIXEL_SCALE_RTOL * max(abs(a), abs(b))):
            raise BadImageError(image.path, "pixel_scale_mismatch",
                                f"band {band} ({os.path.basename(image.path)}) has {b:.6g} "
                                f"arcsec/pixel, band {filters[0]} ({os.path.basename(first.path)}) "
                                f"has {a:.6g}; resample the cut-outs to one grid")
    data = np.concatenate([i.data for i in loaded], axis=-1)
    return BandImage(first.path, tuple(extnames), data, tuple(i.n_repaired[0] for i in loaded),
                     first.meta, tuple(p for i in loaded for p in i.variances),
                     tuple(s for i in loaded for s in i.var_scales))


def sky_position(path: str | os.PathLike, extname: str | None = None) -> tuple[float, float, str]:
    """(RA, Dec) in degrees of an image's centre and where it came from.

    The celestial WCS of HDU ``extname`` (default: the first HDU with data) evaluated at
    the central pixel, else its ``RA``/``DEC`` keys, else the primary header's
    (``'wcs'``, ``'header'``). Raises BadImageError ``no_sky_position`` without either.
    """
    from astropy.wcs import WCS
    from astropy.wcs.utils import pixel_to_skycoord

    path = Path(path)
    with _Fits(path) as f:
        if extname is not None:
            index = f.index(extname)
        else:
            index = next((i for i in range(len(f.names)) if (f.header_value(i, "NAXIS") or 0) >= 2), 0)
        header = f.header(index)
        primary = f.header(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wcs = WCS(header).celestial
            if wcs.has_celestial and wcs.naxis == 2:
                nx, ny = header.get("NAXIS1", 1), header.get("NAXIS2", 1)
                sky = pixel_to_skycoord((nx - 1) / 2, (ny - 1) / 2, wcs).icrs
                if np.isfinite(sky.ra.deg) and np.isfinite(sky.dec.deg):
                    return float(sky.ra.deg), float(sky.dec.deg), "wcs"
        except Exception as exc:  # astropy.wcs raises many kinds on odd headers
            logger.debug("%s: no usable WCS (%s)", path, exc)
    for h in (header, primary):
        ra, dec = header_float(h.get("RA")), header_float(h.get("DEC"))
        if math.isfinite(ra) and math.isfinite(dec):
            return ra, dec, "header"
    raise BadImageError(path, "no_sky_position",
                        "the image has neither a celestial WCS nor RA/DEC header keys; "
                        "sky matching (extract.CATALOGUE_MATCH sky) needs one of them")
