"""Values of plain FITS header cards without astropy, equal to astropy's; None where unsure.

Importing ``astropy.io.fits`` costs ~0.25 CPU s (it pulls in astropy.units), and each of
extract's worker processes would pay it only to read the few keywords of an image's meta
(:func:`scripts.preprocessing.fits_bands.meta_from_header`). The headers extract reads are
made of plain cards: a standard keyword, ``= `` in columns 9–10, then a string, logical,
integer or real value in the fixed format of the FITS standard (4.0, §4.2) and an optional
comment. :func:`card_value` and :func:`header_values` parse those with astropy's own
fixed-format regular expression and value rules (astropy 8.0, ``Card._parse_value``), so
the values are astropy's. Anything else (CONTINUE or HIERARCH cards, record-valued cards,
complex or empty values, free-format numbers, lower-case keywords, non-ASCII bytes) gives
None, and the caller parses the header with astropy as before.
"""
from __future__ import annotations

import re
from typing import Any

_CARD = 80
_END_CARD = b"END" + b" " * 77
#: Keywords of cards without a value that astropy's ``Header.get`` never returns here.
_COMMENTARY = (b"COMMENT ", b"HISTORY ", b"        ")
#: Keywords astropy treats specially even with ``= `` in columns 9–10.
_SPECIAL = (*_COMMENTARY, b"CONTINUE", b"HIERARCH", b"END     ")
#: A standard keyword (FITS standard 4.0, §4.1.2.1), blank-padded to 8 characters.
_KEYWORD_RE = re.compile(rb"[A-Z0-9_-]{1,8} *")
_DIGITS_FSC = r"(\.\d+|\d+(\.\d*)?)([DE][+-]?\d+)?"
_NUMR_FSC = r"[+-]?" + _DIGITS_FSC
#: astropy's ``Card._value_FSC_RE`` (fixed format), complex values left out.
_VALUE_FSC_RE = re.compile(
    r"(?P<value_field> *(?P<value>"
    r"\'(?P<strg>([ -~]+?|\'\'|) *?)\'(?=$|/| )|"
    r"(?P<bool>[FT])|"
    r"(?P<numr>" + _NUMR_FSC + r")"
    r") *)(?P<comm_field>(?P<sepr>/ *)(?P<comm>[!-~][ -~]*)?)?$")
#: astropy's ``Card._number_NFSC_RE``: sign and digits of a number.
_NUMBER_RE = re.compile(r"(?P<sign>[+-])? *0*?(?P<digt>(\.\d+|\d+(\.\d*)?) *([deDE] *[+-]? *\d+)?)")
_FIX_EXPONENT = str.maketrans("dD", "eE", " ")


class NotPlain(Exception):
    """A card or header that needs astropy to be parsed as astropy parses it."""


def card_value(card: bytes) -> Any:
    """Value of one 80-byte value card (``KEYWORD = value``), as astropy's ``Card.value``.

    Raises :class:`NotPlain` for any card that is not plain (see the module docstring).
    """
    if card[8:10] != b"= " or card[:8] in _SPECIAL or not _KEYWORD_RE.fullmatch(card[:8]):
        raise NotPlain(card)
    try:
        rest = card[10:].decode("ascii").strip()
    except UnicodeDecodeError:
        raise NotPlain(card) from None
    if not rest.isprintable() or (rest[:1] == "'" and rest.find(": ") >= 2):
        raise NotPlain(card)  # record-valued keyword cards ('AXIS.1: 2') become DP1.AXIS.1
    m = _VALUE_FSC_RE.match(rest)
    if m is None or m.group("value") is None:
        raise NotPlain(card)
    if m.group("bool") is not None:
        return m.group("bool") == "T"
    if m.group("strg") is not None:
        return re.sub("''", "'", m.group("strg")).rstrip()
    numr = _NUMBER_RE.match(m.group("numr"))
    text = (numr.group("sign") or "") + numr.group("digt").translate(_FIX_EXPONENT)
    try:
        return int(text)
    except ValueError:
        return float(text)


def header_values(raw: bytes) -> dict[str, Any]:
    """``{keyword: value}`` of every value card of a raw header (first occurrence wins, as
    in astropy's ``Header.get``); commentary cards (COMMENT, HISTORY, blank) are left out.

    Raises :class:`NotPlain` when any card up to END is not plain.
    """
    values: dict[str, Any] = {}
    for pos in range(0, len(raw), _CARD):
        card = raw[pos:pos + _CARD]
        if card == _END_CARD:
            return values
        if card[8:10] != b"= ":
            if card[:8] in _COMMENTARY:
                continue
            raise NotPlain(card)
        value = card_value(card)
        values.setdefault(card[:8].decode("ascii").rstrip(), value)
    raise NotPlain(b"no END card")
