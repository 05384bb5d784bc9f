"""Read image bands from FITS files by EXTNAME, and reject broken files with a reason.

One reader for every image dataset (SKIRT/HSC galaxy mocks, survey cut-outs, X-ray maps):

* Bands are found by their ``EXTNAME`` keyword, **the primary HDU included** (the real TNG
  HSC mocks store the G image in the primary HDU with ``EXTNAME = 'SUBARU_HSC.G'``).
  Matching ignores case and surrounding blanks. ``MASK`` / ``VARIANCE`` HDUs are never read
  unless asked for with :func:`read_band_planes`.
* Headers are walked from their raw 2880-byte blocks, reading only the keywords that give
  each HDU's name, type and data size; only the requested HDUs' headers are parsed by
  astropy (``Header.fromstring``) and only their data is read (numpy, at the known offset,
  BSCALE/BZERO/BLANK applied as astropy does). A file the scan does not fully understand
  (tile-compressed images, random groups, odd keywords, bytes after the last HDU, …) is
  read through astropy (``fits.open(memmap=False, lazy_load_hdus=True)``) instead, so
  values and reasons are astropy's either way. (Indexing a lazily loaded HDUList by
  EXTNAME instead parses every header in full, which dominated the extract stage.)
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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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
    else ``kpc_per_pixel / KPCARC``.
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
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadImageError(path, "not_found", "no such file") from None
    except OSError as exc:
        raise BadImageError(path, "not_found", f"cannot stat file: {exc}") from None
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


# --------------------------------------------------------------------------- header scan
#
# The fast path walks the file from its raw header bytes: only the keywords that give an
# HDU's type, name and data size are looked at, so a file of 15 HDUs costs 15 small reads
# instead of 15 fully parsed astropy headers. Anything the scanner is not sure astropy
# would read the same way raises _Unsupported, and the whole file goes through astropy
# (_AstropyFits): the reasons and values are then astropy's by construction.

_CARD = 80
_END_CARD = b"END" + b" " * 77
#: Header bytes must be printable ASCII for the fast path (FITS standard 4.0, §4.1.2.1).
_PRINTABLE = bytes(range(0x20, 0x7F))
#: Value fields (card columns 11-80) the scanner understands; anything else is unusual.
_INT_VALUE = re.compile(rb" *([+-]?[0-9]+) *(?:/.*)?")
_LOGICAL_VALUE = re.compile(rb" *([TF]) *(?:/.*)?")
_STRING_VALUE = re.compile(rb" *'([^']*)' *(?:/.*)?")  # no quote inside: astropy agrees
_ANY_VALUE = re.compile(rb" *([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[ED][+-]?[0-9]+)?|[TF]|'[^']*')"
                        rb" *(?:/.*)?")
#: Keywords the scanner reads (padded to 8 bytes as they stand in a card).
_STRUCTURAL = {k.ljust(8).encode(): k for k in
               ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "EXTNAME",
                "BSCALE", "BZERO", "BLANK", "GROUPS", "ZIMAGE", "EXTEND")}
_STRUCTURAL.update({f"NAXIS{n}".ljust(8).encode(): f"NAXIS{n}" for n in range(1, 1000)})
_STRUCTURAL_NAMES = {name.encode() for name in _STRUCTURAL.values()}
#: XTENSION values walked by the fast path, with astropy's class name for messages.
_XTENSIONS = {"IMAGE": "ImageHDU", "BINTABLE": "BinTableHDU", "TABLE": "TableHDU"}
_BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class _Unsupported(Exception):
    """The scanner met something it does not handle; astropy reads the file instead."""


@dataclass(frozen=True)
class _HDU:
    """Where one HDU lies in the file, from its structural keywords (offsets in bytes)."""

    header_bytes: bytes             # whole 2880-byte blocks, END card included
    header_offset: int
    data_offset: int
    data_size: int                  # without the padding to a whole block
    type_name: str                  # astropy's class for this HDU (PrimaryHDU, ImageHDU, …)
    extname: str                    # upper-case, stripped; '' if none
    bitpix: int
    axes: tuple[int, ...]           # NAXIS1 … NAXISn, FITS order
    scaled: bool                    # BSCALE, BZERO or BLANK present: astropy may rescale

    @property
    def is_image(self) -> bool:
        return self.type_name in ("PrimaryHDU", "ImageHDU")

    @property
    def end(self) -> int:
        """Offset where the data ends, without the block padding (as astropy's size)."""
        return self.data_offset + self.data_size

    @property
    def next_offset(self) -> int:
        return self.data_offset + -(-self.data_size // FITS_BLOCK) * FITS_BLOCK


def _card_value(card: bytes, pattern: re.Pattern, keyword: str):
    match = pattern.fullmatch(card, 10)
    if match is None:
        raise _Unsupported(f"{keyword} value {card[10:].strip()!r}")
    return match.group(1)


def _read_header(handle, offset: int, size: int) -> tuple[bytes, int]:
    """Header blocks at ``offset`` up to the END card's block, and the END card's position."""
    blocks = []
    start = offset
    while True:
        if offset + FITS_BLOCK > size:
            raise _Unsupported(f"header at byte {start} runs past the end of the file")
        handle.seek(offset)
        block = handle.read(FITS_BLOCK)
        if len(block) != FITS_BLOCK:
            raise _Unsupported(f"short read at byte {offset}")
        blocks.append(block)
        offset += FITS_BLOCK
        at = block.find(_END_CARD)
        while at >= 0 and at % _CARD:
            at = block.find(_END_CARD, at + 1)
        if at >= 0:
            if block[at + _CARD:].strip(b" "):
                raise _Unsupported("bytes after the END card")
            return b"".join(blocks), (len(blocks) - 1) * FITS_BLOCK + at


def _parse_header(raw: bytes, end: int, header_offset: int, first: bool) -> _HDU:
    """Structural keywords of one header (END card at ``end``); _Unsupported if unusual."""
    if raw.translate(None, _PRINTABLE):
        raise _Unsupported("non-ASCII header bytes")
    found: dict[str, bytes] = {}
    previous_structural = False
    for pos in range(0, end, _CARD):
        card = raw[pos:pos + _CARD]
        key8 = card[:8]
        name = _STRUCTURAL.get(key8)
        if name is None:
            if key8 == b"CONTINUE":
                if previous_structural:
                    raise _Unsupported("CONTINUE after a structural keyword")
                continue
            previous_structural = False
            stripped = key8.strip().upper()
            if b"=" in key8 or stripped in _STRUCTURAL_NAMES or stripped == b"END":
                raise _Unsupported(f"unusual keyword field {key8!r}")
            if stripped == b"HIERARCH":
                keyword = card[9:card.find(b"=")].strip().upper()
                if keyword in _STRUCTURAL_NAMES or keyword.startswith(b"NAXIS"):
                    raise _Unsupported(f"HIERARCH card for {keyword!r}")
            continue
        previous_structural = True
        if card[8:10] != b"= ":
            raise _Unsupported(f"{name} without a value indicator")
        if name in found:
            raise _Unsupported(f"{name} appears twice")
        if (pos == 0) != (name in ("SIMPLE", "XTENSION")):
            raise _Unsupported(f"{name} in card {pos // _CARD + 1}")
        found[name] = card
    if "GROUPS" in found or "ZIMAGE" in found:
        raise _Unsupported("random groups or tile-compressed HDU")
    if "EXTEND" in found:  # astropy's update_extend() reads it on open
        _card_value(found["EXTEND"], _LOGICAL_VALUE, "EXTEND")
    for name in ("BSCALE", "BZERO", "BLANK"):  # astropy reads them on open: must parse
        if name in found:
            _card_value(found[name], _ANY_VALUE, name)
    if first:
        if "SIMPLE" not in found or _card_value(found["SIMPLE"], _LOGICAL_VALUE,
                                                "SIMPLE") != b"T":
            raise _Unsupported("primary header without SIMPLE = T")
        type_name = "PrimaryHDU"
    else:
        if "XTENSION" not in found:
            raise _Unsupported("extension header without XTENSION")
        xtension = _card_value(found["XTENSION"], _STRING_VALUE, "XTENSION")
        type_name = _XTENSIONS.get(xtension.decode().rstrip())
        if type_name is None:
            raise _Unsupported(f"XTENSION = {xtension!r}")
    ints = {}
    for name in ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT"):
        if name in found:
            ints[name] = int(_card_value(found[name], _INT_VALUE, name))
    if "BITPIX" not in ints or "NAXIS" not in ints:
        raise _Unsupported("BITPIX or NAXIS missing")
    bitpix, naxis = ints["BITPIX"], ints["NAXIS"]
    if bitpix not in _BITPIX_DTYPE or not 0 <= naxis <= 999:
        raise _Unsupported(f"BITPIX = {bitpix}, NAXIS = {naxis}")
    axes = []
    for n in range(1, naxis + 1):
        if f"NAXIS{n}" not in found:
            raise _Unsupported(f"NAXIS{n} missing")
        axes.append(int(_card_value(found[f"NAXIS{n}"], _INT_VALUE, f"NAXIS{n}")))
    pcount, gcount = ints.get("PCOUNT", 0), ints.get("GCOUNT", 1)
    if min(axes, default=0) < 0 or pcount < 0 or gcount < 0:
        raise _Unsupported("negative NAXISn, PCOUNT or GCOUNT")
    if type_name in ("PrimaryHDU", "ImageHDU") and (pcount, gcount) != (0, 1):
        raise _Unsupported(f"image with PCOUNT = {pcount}, GCOUNT = {gcount}")
    data_size = abs(bitpix) * gcount * (pcount + math.prod(axes)) // 8 if naxis else 0
    extname = ""
    if "EXTNAME" in found:
        value = _card_value(found["EXTNAME"], _STRING_VALUE, "EXTNAME").decode()
        if value.rstrip().endswith("&") or ":" in value:  # long string / record-valued
            raise _Unsupported(f"EXTNAME = {value!r}")
        extname = value.strip().upper()
    return _HDU(raw, header_offset, header_offset + len(raw), data_size, type_name, extname,
                bitpix, tuple(axes), any(k in found for k in ("BSCALE", "BZERO", "BLANK")))


def _scan(handle, size: int) -> list[_HDU]:
    """Every HDU of the file from its headers alone (no data read).

    The walk stops where astropy stops: at the end of the file or past it (the last HDU's
    data then runs beyond the file: truncated). Extra bytes after the last HDU that are
    not a complete, clean header (garbage, a header cut short) raise _Unsupported, since
    astropy's reaction to them depends on what they are.
    """
    hdus: list[_HDU] = []
    offset = 0
    while offset < size:
        raw, end = _read_header(handle, offset, size)
        hdus.append(_parse_header(raw, end, offset, not hdus))
        offset = hdus[-1].next_offset
    return hdus


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
    def _check_array(path: Path, data: np.ndarray | None, extname: str) -> np.ndarray:
        """2-D real numbers in native byte order, or BadImageError (wrong_shape)."""
        if data is None:
            raise BadImageError(path, "wrong_shape", f"HDU {extname!r} has no data")
        if data.ndim != 2:
            raise BadImageError(path, "wrong_shape",
                                f"HDU {extname!r} has shape {data.shape}; expected a 2-D image")
        if not (np.issubdtype(data.dtype, np.number) and not np.iscomplexobj(data)):
            raise BadImageError(path, "wrong_shape",
                                f"HDU {extname!r} holds {data.dtype}, not real numbers")
        return data.astype(data.dtype.newbyteorder("="), copy=False)


class _ScannedFits(_FitsBase):
    """Fast reader: HDUs located by :func:`_scan`, image data read with numpy at its offset.

    Only the requested HDUs' headers are parsed by astropy (``Header.fromstring``), and
    only when needed (meta, header values, BSCALE/BZERO/BLANK).
    """

    def __init__(self, path: Path, size: int, handle, hdus: list[_HDU]):
        self.path, self.size, self.handle, self.hdus = path, size, handle, hdus
        self.names = [h.extname for h in hdus]
        self.last_end = hdus[-1].end if hdus else 0
        self._headers: dict[int, fits.Header] = {}

    def close(self) -> None:
        self.handle.close()

    def header(self, index: int) -> fits.Header:
        if index not in self._headers:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                header = fits.Header.fromstring(self.hdus[index].header_bytes.decode("ascii"))
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
        if index in self._headers:
            return self._headers[index].get(keyword)
        raw, key = self.hdus[index].header_bytes, keyword.upper().encode("ascii").ljust(8)
        for pos in range(0, len(raw), _CARD):
            card = raw[pos:pos + _CARD]
            if card == _END_CARD:
                break
            if card[:8] == key and card[8:10] == b"= ":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        return fits.Card.fromstring(card.decode("ascii")).value
                    except _ASTROPY_READ_ERRORS:
                        return None
        return None

    def data(self, index: int, extname: str) -> np.ndarray:
        """The 2-D numeric data of HDU ``index``, native byte order."""
        hdu = self.hdus[index]
        if not hdu.is_image:
            raise BadImageError(self.path, "wrong_shape",
                                f"HDU {extname!r} is a {hdu.type_name}, not an image")
        if hdu.end > self.size:
            raise BadImageError(self.path, "truncated",
                                f"data of HDU {extname!r} ends at byte {hdu.end}, file "
                                f"has {self.size}")
        if not hdu.axes:
            return self._check_array(self.path, None, extname)
        shape = tuple(reversed(hdu.axes))
        if len(shape) != 2:  # astropy would read it all only to fail the same test
            raise BadImageError(self.path, "wrong_shape",
                                f"HDU {extname!r} has shape {shape}; expected a 2-D image")
        raw = np.empty(shape, dtype=_BITPIX_DTYPE[hdu.bitpix])
        try:
            self.handle.seek(hdu.data_offset)
            got = self.handle.readinto(memoryview(raw).cast("B")) if raw.size else 0
        except OSError as exc:
            raise BadImageError(self.path, "unreadable_data",
                                f"HDU {extname!r}: {type(exc).__name__}: {exc}") from None
        if got != hdu.data_size:
            raise BadImageError(self.path, "unreadable_data",
                                f"HDU {extname!r}: read {got} of {hdu.data_size} bytes")
        if hdu.scaled:
            raw = _scale_like_astropy(raw, hdu.bitpix, self.header(index))
        return self._check_array(self.path, raw, extname)


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

    def data(self, index: int, extname: str) -> np.ndarray:
        """The 2-D numeric data of HDU ``index``, native byte order."""
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
        return self._check_array(self.path, data, extname)


class _Fits:
    """Open a FITS file and index its HDUs by EXTNAME (a context manager).

    Yields a :class:`_ScannedFits` when the header scan understands the whole file, else
    an :class:`_AstropyFits`; both raise the same :class:`BadImageError` reasons.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.size = _check_file(self.path)
        self._reader: _ScannedFits | _AstropyFits | None = None

    def __enter__(self) -> _ScannedFits | _AstropyFits:
        handle = None
        try:
            handle = open(self.path, "rb")
            reader = _ScannedFits(self.path, self.size, handle, _scan(handle, self.size))
        except (_Unsupported, OSError) as why:
            if handle is not None:
                handle.close()
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
               shape: tuple[int, int] | None = None, variance: bool = False) -> BandImage:
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
        planes, scales = (_variance_planes(f, extnames, indices, bands[0].shape) if variance
                          else ((), ()))
    data = np.stack(bands, axis=-1).astype(np.float32, copy=False)
    return BandImage(str(path), tuple(extnames), data, tuple(counts), meta, planes, scales)


def _variance_planes(f, extnames: Sequence[str], indices: Sequence[int],
                     shape: tuple[int, ...]) -> tuple[tuple, tuple[float, ...]]:
    """(VARIANCE plane or None, VARSC or NaN) per band of an open file."""
    planes, scales = [], []
    for name, index in zip(extnames, indices):
        key = (name + PLANE_SUFFIX["variance"]).strip().upper()
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
        scales.append(_as_float(f.header_value(index, "VARSC")) if plane is not None else math.nan)
    return tuple(planes), tuple(scales)


def read_bands(path: str | os.PathLike, extnames: Sequence[str], **kwargs) -> np.ndarray:
    """(H, W, C) float32 bands of ``path`` by EXTNAME; see :func:`load_bands` for options."""
    return load_bands(path, extnames, **kwargs).data


def read_band_planes(path: str | os.PathLike, extname: str,
                     planes: Iterable[str] = ("image", "mask", "variance"),
                     ) -> dict[str, np.ndarray]:
    """Image, mask and/or variance planes of one band, as stored (no repair).

    The planes live in HDUs ``EXTNAME``, ``EXTNAME + ' MASK'`` and
    ``EXTNAME + ' VARIANCE'`` (HSC / SKIRT mock layout). Returns ``{plane: array}`` with
    the image and variance as float32 and the mask as stored (an integer bit mask).
    """
    planes = tuple(planes)
    unknown = [p for p in planes if p not in PLANE_SUFFIX]
    if unknown:
        raise ValueError(f"unknown planes {unknown}; expected some of {tuple(PLANE_SUFFIX)}")
    out: dict[str, np.ndarray] = {}
    with _Fits(path) as f:
        for plane in planes:
            name = extname + PLANE_SUFFIX[plane]
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


def _as_float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def meta_from_header(header: Mapping[str, Any], path: str = "", extname: str = "") -> ImageMeta:
    """:class:`ImageMeta` from a FITS header (see the class for the rules)."""
    nx, ny = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
    fov_kpc = _as_float(header.get("FOVKPC", header.get("FOVSIZE")))
    fov_arcsec = _as_float(header.get("FOVARC"))
    kpc_per_arcsec = _as_float(header.get("KPCARC"))
    kpc_per_pixel = fov_kpc / nx if nx else math.nan
    if not math.isfinite(kpc_per_pixel):
        ctype = str(header.get("CTYPE1", "")).strip().lower()
        scale = {"pc": 1e-3, "kpc": 1.0}.get(ctype)
        kpc_per_pixel = abs(_as_float(header.get("CDELT1"))) * scale if scale else math.nan
    arcsec_per_pixel = fov_arcsec / nx if nx else math.nan
    if not math.isfinite(arcsec_per_pixel) and kpc_per_arcsec > 0:
        arcsec_per_pixel = kpc_per_pixel / kpc_per_arcsec
    return ImageMeta(path=path, extname=extname, shape=(ny, nx),
                     redshift=_as_float(header.get("REDSHIFT")), fov_kpc=fov_kpc,
                     fov_arcsec=fov_arcsec, kpc_per_arcsec=kpc_per_arcsec,
                     kpc_per_pixel=kpc_per_pixel, arcsec_per_pixel=arcsec_per_pixel)


def read_image_meta(path: str | os.PathLike, extname: str | None = None) -> ImageMeta:
    """Redshift, field of view and pixel scales of one image HDU (default: primary)."""
    with _Fits(path) as f:
        index = 0 if extname is None else f.index(extname)
        return meta_from_header(f.header(index), str(path), f.names[index])
