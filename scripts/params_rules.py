"""Value rules of the params schema: each converter takes ``(value, path)`` and returns the
typed value or raises :class:`ParamsError` naming the key path, the value found and what was
expected. :mod:`scripts.params` declares which rule each key follows.
"""
from __future__ import annotations

import difflib
import math
import numbers
import re
from typing import Any


class ParamsError(ValueError):
    """A params file that does not follow the schema; the message names the key."""


# --------------------------------------------------------------------------- converters
# A converter takes (value, path) and returns the typed value or raises ParamsError.

def fail(path: str, value: Any, expected: str) -> ParamsError:
    return ParamsError(f"{path} = {value!r}: expected {expected}")


def is_none(value: Any) -> bool:
    # the original params files wrote None as a string
    return value is None or (isinstance(value, str) and value.strip() in ("None", "null", "~"))


def boolean(value, path):
    if isinstance(value, bool):
        return value
    raise fail(path, value, "true or false")


boolean.describe = "true/false"


def integer(lo: float = -math.inf, hi: float = math.inf):
    def conv(value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise fail(path, value, f"an integer in [{lo}, {hi}]")
        if not lo <= value <= hi:
            raise fail(path, value, f"an integer in [{lo}, {hi}]")
        return value
    conv.describe = "integer" + (f" ≥ {lo}" if lo > -math.inf and hi == math.inf else "")
    return conv


def number(lo: float = -math.inf, hi: float = math.inf, lo_open=False, hi_open=False):
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    expected = f"a number in {left}{lo}, {hi}{right}"

    def conv(value, path):
        if isinstance(value, bool):
            raise fail(path, value, expected)
        if isinstance(value, str):  # PyYAML reads 1e9 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise fail(path, value, expected) from None
        if not isinstance(value, numbers.Real) or math.isnan(value):
            raise fail(path, value, expected)
        value = float(value)
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            raise fail(path, value, expected)
        return value
    conv.describe = "number"
    return conv


def string(choices: tuple[str, ...] | None = None, pattern: str | None = None):
    def conv(value, path):
        if not isinstance(value, str) or not value:
            raise fail(path, value, "a non-empty string" + (f" among {list(choices)}" if choices else ""))
        if choices is not None and value not in choices:
            hint = difflib.get_close_matches(value, choices, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise fail(path, value, f"one of {list(choices)}{extra}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise fail(path, value, f"a string matching {pattern}")
        return value
    conv.describe = "one of " + "/".join(choices) if choices else "string"
    return conv


def optional(inner):
    def conv(value, path):
        return None if is_none(value) else inner(value, path)
    conv.describe = f"{getattr(inner, 'describe', 'value')}, or null"
    return conv


def list_of(inner, length: int | None = None, min_length: int = 0, unique: bool = False):
    def conv(value, path):
        if not isinstance(value, (list, tuple)):
            raise fail(path, value, "a list" + (f" of {length} entries" if length else ""))
        if length is not None and len(value) != length:
            raise fail(path, value, f"a list of exactly {length} entries, got {len(value)}")
        if len(value) < min_length:
            raise fail(path, value, f"a list of at least {min_length} entries")
        out = tuple(inner(v, f"{path}[{i}]") for i, v in enumerate(value))
        if unique and len(set(out)) != len(out):
            dup = sorted({v for v in out if out.count(v) > 1})
            raise fail(path, value, f"unique entries (repeated: {dup})")
        return out
    inner_doc = getattr(inner, "describe", "values")
    conv.describe = f"list of ({inner_doc})" if " or " in inner_doc else f"list of {inner_doc}"
    return conv


def mapping(key_conv, value_conv):
    def conv(value, path):
        if not isinstance(value, dict):
            raise fail(path, value, "a mapping")
        return {key_conv(k, f"{path}.{k}"): value_conv(v, f"{path}.{k}") for k, v in value.items()}
    conv.describe = "mapping"
    return conv


def pair(inner, ordered: bool = True):
    """A [low, high] range."""
    base = list_of(inner, length=2)

    def conv(value, path):
        lo, hi = base(value, path)
        if ordered and lo > hi:
            raise fail(path, value, "[low, high] with low ≤ high")
        return (lo, hi)
    conv.describe = "[low, high]"
    return conv


def ranges(inner):
    """One [low, high] range for every band, or a list with one range per band."""
    one = pair(inner)

    def conv(value, path):
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple))
                                                              for v in value):
            return tuple(one(v, f"{path}[{i}]") for i, v in enumerate(value))
        return one(value, path)
    conv.describe = "[low, high], or one such pair per band"
    return conv


#: Largest ``train.AUGMENTATION.COLOUR_JITTER_MAG``: a few hundredths of a magnitude is a
#: realistic calibration error; much more and the augmentation erases colour information.
MAX_COLOUR_JITTER_MAG = 0.1


def shared_flux_scale(value, path):
    """One [low, high] flux-scale range; a per-band list is refused (it washes out colour)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        raise fail(path, value, "one [low, high] range: the factor is shared by all bands so "
                    "colours are kept; per-band ranges are no longer supported (they wash out "
                    "colour), give per-band calibration error as COLOUR_JITTER_MAG [mag]")
    return pair(number(0, lo_open=True))(value, path)


shared_flux_scale.describe = "[low, high]"


def rotation_limit(value, path):
    """true (any angle), false (none) or the largest angle in degrees."""
    if isinstance(value, bool):
        return value
    try:
        return number(0, 180)(value, path)
    except ParamsError:
        raise fail(path, value, "true/false or a largest angle in degrees in [0, 180]") from None


rotation_limit.describe = "true/false or degrees in [0, 180]"


#: Tracking backends ``tracking.BACKENDS`` may name (``none``: log nothing).
TRACKING_BACKENDS = ("mlflow", "tensorboard", "none")


def tracking_backends(value, path):
    """Names among :data:`TRACKING_BACKENDS`, repeats dropped; ``none`` only alone."""
    names = list_of(string(TRACKING_BACKENDS), min_length=1)(value, path)
    if "none" in names and len(set(names)) > 1:
        raise fail(path, value, "'none' alone, or backends without 'none'")
    return tuple(dict.fromkeys(names))


tracking_backends.describe = "list of " + "/".join(TRACKING_BACKENDS) + " (none alone)"


def regex(value, path):
    value = string()(value, path)
    try:
        re.compile(value)
    except re.error as err:
        raise fail(path, value, f"a valid regular expression ({err})") from None
    return value  # the groups it needs depend on the layout and match: checked in _validate


def extnames(value, path):  # noqa: D401
    """An EXTNAME template with ``{filter}`` or a mapping filter → EXTNAME; a plain name
    (the same HDU in every band's own file) is checked against the layout in _validate."""
    if isinstance(value, str):
        if not value.strip():
            raise fail(path, value, "a template containing {filter} or a mapping band → EXTNAME")
        return value
    return mapping(string(), string())(value, path)


extnames.describe = "template or mapping"
regex.describe = "regex"


def bands(value, path):
    """FILTERS: one list of band names for every dataset, or one list per dataset."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        return list_of(list_of(string(), min_length=1), min_length=1)(value, path)
    return list_of(string(), min_length=1, unique=True)(value, path)


bands.describe = "list of band names, or one such list per dataset"
