"""Open one FITS file robustly and index its HDUs by EXTNAME; reject a broken file with a reason.

:class:`FitsFile` opens the file with fitsio (cfitsio), which walks every header and gives
each HDU's name, type, dimensions and byte offsets; only the requested HDUs' data are read.
Headers are parsed by astropy (``Header.fromstring`` of the stored bytes) and only when
needed, so header values are astropy's; BSCALE/BZERO/BLANK are applied as astropy does.
Header *values* for reading (an image's meta, ``VARSC``, ``NAXIS``) come from fitsio's own
parse (:meth:`_FitsioFits.header_values`), and astropy is imported on first use, so an
extract worker reading files fitsio can read never imports it (~0.25 CPU s each). A
file fitsio cannot open, or whose last bytes it does not reach (trailing garbage, a header
cut short), is read through astropy (``fits.open(memmap=False, lazy_load_hdus=True)``)
instead. Truncation is judged from the HDU offsets against the file size, since cfitsio
itself reports a cut file as a missing extension or a read error.

Every way a file can be unusable raises :class:`BadImageError` with a short ``reason`` code
(see :data:`BadImageError.REASONS`), so extract can skip the file, count skips by reason
and write them to its report. What a file's bands mean (which planes, repairs, header
values) is :mod:`scripts.preprocessing.fits_bands`.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import fitsio
import numpy as np

if TYPE_CHECKING:
    from astropy.io import fits

logger = logging.getLogger(__name__)

#: FITS files are made of 2880-byte blocks (FITS standard 4.0, §3.1).
FITS_BLOCK = 2880
#: Every valid FITS file starts with this keyword (FITS standard 4.0, §4.4.1.1).
_FITS_MAGIC = b"SIMPLE  ="
#: Exceptions that fitsio raises on input it cannot read: cfitsio errors are OSError, and
#: fitsio raises UnicodeDecodeError when cfitsio's message quotes non-ASCII header bytes.
_FITSIO_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError)
_CARD = 80
_END_CARD = b"END" + b" " * 77
#: Keywords that make astropy rescale image data (as they stand in a card, 8 bytes).
_SCALING_KEYS = (b"BSCALE  ", b"BZERO   ", b"BLANK   ")
#: astropy's class names for fitsio's HDU types (messages name them as before).
_TABLE_TYPES = {"BINARY_TBL": "BinTableHDU", "ASCII_TBL": "TableHDU"}


def _astropy_fits():
    """``astropy.io.fits``, imported on first use: importing it costs ~0.25 CPU s (astropy
    pulls in astropy.units), which extract's workers would pay once each although files
    fitsio reads whole need no astropy."""
    from astropy.io import fits
    return fits


def _astropy_read_errors() -> tuple[type[Exception], ...]:
    """Exceptions that astropy raises on corrupt input (header parsing, data decoding).

    AttributeError included: astropy raises it on a trailing block that starts with END
    ("'_BaseHDU' object has no attribute 'size'"), and one bad file must not stop a run.
    A function so that astropy is imported only by the code that calls it (an ``except``
    clause is evaluated only when an exception reaches it).
    """
    from astropy.io.fits.verify import VerifyError
    return (OSError, ValueError, TypeError, IndexError, KeyError, VerifyError,
            UnicodeDecodeError, AttributeError)


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
    if isinstance(hdu, _astropy_fits().CompImageHDU):
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
        self._fitsio_headers: dict[int, fitsio.FITSHDR] = {}
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
                header = _astropy_fits().Header.fromstring(self._raw_header(index))
                naxis = header["NAXIS"]
                size = abs(header["BITPIX"]) * header.get("GCOUNT", 1) * (
                    header.get("PCOUNT", 0) + math.prod(header[f"NAXIS{n}"]
                                                        for n in range(1, naxis + 1))) // 8
            except (*_astropy_read_errors(), ArithmeticError) as exc:
                raise _FitsioCannotRead(f"size of HDU {index}: {exc}") from None
        return self.offsets[index]["data_start"] + (size if naxis else 0)

    def header(self, index: int) -> fits.Header:
        if index not in self._headers:
            fits = _astropy_fits()
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

    def header_values(self, index: int) -> Mapping[str, Any]:
        """Header of HDU ``index`` for reading values (``.get``): fitsio's parse of its cards
        (``FITSHDR``, ~0.04 ms), so reading an image's meta needs no astropy; astropy's
        :meth:`header` where that is parsed already or the HDU is compressed."""
        if index in self._headers or self.hdus[index].is_compressed():
            return self.header(index)
        if index not in self._fitsio_headers:
            try:
                self._fitsio_headers[index] = self.hdus[index].read_header()
            except _FITSIO_ERRORS as exc:
                logger.debug("%s: HDU %d header parsed by astropy (fitsio: %s)", self.path, index, exc)
                return self.header(index)
        return self._fitsio_headers[index]

    def header_value(self, index: int, keyword: str) -> Any:
        """Value of one keyword of HDU ``index`` (None if absent)."""
        return self.header_values(index).get(keyword)

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
            except _astropy_read_errors() as exc:
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
                self.hdul = _astropy_fits().open(self.path, memmap=False, lazy_load_hdus=True)
            except _astropy_read_errors() as exc:
                raise _header_failure(self.path, self.size, exc) from None
            try:
                # Iterating a lazily loaded HDUList parses each header and skips its data.
                self.names = [str(h.header.get("EXTNAME", "")).strip().upper()
                              for h in self.hdul]
                self.last_end = _data_end(self.hdul[-1]) if len(self.hdul) else 0
            except _astropy_read_errors() as exc:
                self.hdul.close()
                raise _header_failure(self.path, self.size, exc) from None
        for w in caught:
            logger.debug("%s: astropy warning: %s", self.path, w.message)

    def close(self) -> None:
        self.hdul.close()

    def header(self, index: int) -> fits.Header:
        return self.hdul[index].header

    def header_values(self, index: int) -> fits.Header:
        return self.hdul[index].header

    def header_value(self, index: int, keyword: str) -> Any:
        return self.hdul[index].header.get(keyword)

    def data(self, index: int, extname: str, ndim: int = 2) -> np.ndarray:
        """The ``ndim``-D numeric data of HDU ``index``, native byte order."""
        hdu = self.hdul[index]
        fits = _astropy_fits()
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
            except _astropy_read_errors() as exc:
                raise BadImageError(self.path, "unreadable_data",
                                    f"HDU {extname!r}: {type(exc).__name__}: {exc}") from None
        return self._check_array(self.path, data, extname, ndim)


class FitsFile:
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
