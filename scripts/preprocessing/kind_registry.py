"""The registry of dataset kinds: each kind's name, defaults and the class that extracts it.

One table read by both the params schema (which validates ``extract.EXTRACTORS`` and
fills per-dataset defaults without importing pandas or TensorFlow) and the extract stage
(which builds the kind's extractor). It imports nothing beyond the standard library, so
:mod:`scripts.params` stays cheap to import.

Add a dataset kind: subclass :class:`scripts.preprocessing.dataset_kinds.Extractor`, then add
one :class:`DatasetKind` entry here naming that class (see README, "Add your own dataset").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetKind:
    """Defaults of one dataset kind and where its extractor class lives.

    ``file_pattern``: default file-name regex; named groups give the identity of every
    image (``snapshot`` and ``projection`` are optional, 0 when absent).
    ``band_extname``: default EXTNAME template, ``{filter}`` replaced by the band.
    ``cropper``: default cropper. ``simulated``: images of a TNG run (SIMULATIONS
    required, file names carry snapshots) rather than observed ones (snapshot −1, sky
    matching allowed). ``extractor``: ``"module:Class"`` of the extractor.
    """

    description: str
    file_pattern: str
    band_extname: str
    cropper: str
    simulated: bool
    extractor: str


KINDS: dict[str, DatasetKind] = {
    "tng_stellar": DatasetKind(
        description="TNG stellar-light mocks",
        # real SKIRT/HSC archive and the original pipeline's convention
        file_pattern=(
            r"^(?:shalo_(?P<snapshot>\d+)-(?P<object_id>\d+)_v(?P<projection>\d+)_.*"
            r"|snap_(?P<snapshot2>\d+)-(?P<object_id2>\d+)_(?P<projection2>\d+))\.fits$"),
        band_extname="SUBARU_HSC.{filter}",
        cropper="petrosian",
        simulated=True,
        extractor="scripts.preprocessing.dataset_kinds:TNGStellarExtractor"),
    "survey": DatasetKind(
        description="observed cut-outs + catalogue",
        file_pattern=r"^(?P<object_id>\d+)_.*\.fits$",
        band_extname="SUBARU_HSC.{filter}",
        cropper="petrosian",
        simulated=False,
        extractor="scripts.preprocessing.dataset_kinds:SurveyExtractor"),
    "tng_xray": DatasetKind(
        description="TNG group X-ray maps",
        file_pattern=r"^xray_(?P<snapshot>\d+)-(?P<object_id>\d+)_v(?P<projection>\d+)_.*\.fits$",
        band_extname="XRAY_{filter}",
        cropper="r200c",
        simulated=True,
        extractor="scripts.preprocessing.dataset_kinds:TNGXrayExtractor"),
}


def runs_petrosian_fit(kind: str, cropper: str) -> bool:
    """Whether extract fits a Petrosian profile to each image of a ``kind`` dataset cropped
    by ``cropper``: to crop by it (petrosian), or, for a galaxy kind cropped at a fixed scale
    (fraction, none), to measure its magnitudes and radii without cropping by them."""
    return cropper == "petrosian" or (cropper in ("fraction", "none")
                                      and KINDS[kind].cropper == "petrosian")


def extractor_class(kind: str) -> type:
    """The extractor class registered for ``kind`` (imported on first use)."""
    try:
        entry = KINDS[kind]
    except KeyError:
        raise ValueError(f"no dataset kind {kind!r}; known: {sorted(KINDS)}") from None
    module, _, name = entry.extractor.partition(":")
    return getattr(importlib.import_module(module), name)
