"""An analysed run as the explorer sees it: one table of points, their vectors, neighbour
searches, realism scores and thumbnails. Pure Python, no web framework: the app
(:mod:`scripts.explore.app`) and the tests use it alike.

Everything comes from the run's own outputs under ``reports/<run>/`` (written by the
analyse stage) and the image stores under ``dataset/``:

- ``representation.parquet``: identity columns and the vectors;
- ``map_coordinates.parquet``: ``umap_1/2``, ``pca_*``;
- ``dataset/<DATASET>/objects.parquet``: the FIELDS of ``extract.FIELDS`` (joined as the
  analyse stage does, :func:`scripts.analysis.inputs.attach_fields`);
- ``posterior_summary.parquet`` (optional; written by a future posterior stage): its
  numeric columns are joined by ``(dataset, row)`` and can colour the map like FIELDS.

Neighbour searches reuse :class:`scripts.analysis.analogues.AnalogueFinder` with the
stage's standardisation (the observed set's mean and std), so an observed object's
analogues are the rows of ``analogues.parquet``. New FITS files go through the extract
stage's reading, cropping and resizing (:func:`scripts.analysis.analogues.fits_reader`)
and the run's encoder.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.analysis.analogues import AnalogueFinder, check_same_encoder, fits_reader
from scripts.analysis.representation import (REPRESENTATION_FILE, Representation,
                                             read_representation, standardiser)

logger = logging.getLogger(__name__)

#: Points drawn on the map at most; a larger run is shown as a seeded subsample (every
#: image still takes part in the neighbour searches).
MAX_POINTS = 200_000
#: Optional table of a posterior stage, joined by (dataset, row) when present.
POSTERIOR_FILE = "posterior_summary.parquet"
#: Identity columns of every point.
IDENTITY = ["dataset", "row", "object_id", "snapshot", "projection", "split"]
#: Map positions of a new image: mean map position of this many nearest neighbours (the
#: analyse stage does not store its UMAP model, so new points cannot be transformed).
PLACE_NEIGHBOURS = 5
#: Side of a thumbnail PNG in pixels.
THUMB_PX = 96
#: Column of the out-of-distribution score.
OOD = "ood_score"


@dataclass
class NewImage:
    """A FITS file dropped into the explorer: its image and vector, or why it was skipped."""

    name: str
    image: np.ndarray | None = None
    vector: np.ndarray | None = None
    reason: str = ""
    detail: str = ""
    position: dict = field(default_factory=dict)     # map column -> coordinate
    neighbours: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return self.image is not None and not self.reason

    def message(self) -> str:
        """One line for the page: the skip reason (the extract stage's code and detail)."""
        if self.ok:
            return f"{self.name}: embedded"
        return f"{self.name}: skipped ({self.reason}: {self.detail})"


def png_bytes(rgb: np.ndarray, size: int = THUMB_PX) -> bytes:
    """PNG of a display image (H, W, 3) in [0, 1] at the explorer's thumbnail size (the
    report's interactive map encodes its thumbnails with the same function)."""
    from scripts.analysis.interactive_map import png_bytes as encode

    return encode(rgb, size)


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted positions of the points drawn: all, or a seeded subsample of ``max_points``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def read_posterior(report_dir: Path, keys: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns of ``report_dir/posterior_summary.parquet`` (e.g. posterior medians)
    aligned with ``keys`` (columns dataset, row) and named ``posterior_<column>``; empty
    when the file does not exist (no posterior stage yet)."""
    path = Path(report_dir) / POSTERIOR_FILE
    if not path.exists():
        return pd.DataFrame(index=keys.index)
    post = pd.read_parquet(path)
    missing = {"dataset", "row"} - set(post.columns)
    if missing:
        logger.warning("%s has no %s column(s); its columns are not shown", path, sorted(missing))
        return pd.DataFrame(index=keys.index)
    numeric = [c for c in post.columns if c not in ("dataset", "row")
               and pd.api.types.is_numeric_dtype(post[c])]
    post = post.set_index(["dataset", "row"])[numeric].astype(np.float64)
    out = post.reindex(pd.MultiIndex.from_frame(keys[["dataset", "row"]]))
    out.index = keys.index
    return out.add_prefix("posterior_")


def ood_scores(rep: Representation, groups, observed, simulated, params) -> np.ndarray:
    """Per-image OOD score (Eisert et al. 2024, :func:`scripts.analysis.realism.ood_score`):
    observed images against the simulated sets pooled (> 1: no simulated counterpart),
    simulated images against the observed sets pooled; NaN for other datasets and for
    images outside the seeded subsample of ``analyse.REALISM.SUBSAMPLE``. Both are
    standardised with the observed sets, as :func:`compare_sets` does. All embedded splits
    are scored (the report's numbers use only ``analyse.EVALUATION_SPLITS``)."""
    from scripts.analysis.realism import ood_score

    r = params.analyse.realism
    out = np.full(len(rep.meta), np.nan)
    ds = rep.meta["dataset"].to_numpy()
    obs, sim = np.isin(ds, list(observed)), np.isin(ds, list(simulated))
    if not obs.any() or not sim.any():
        return out
    mean, std = standardiser(rep.vectors[obs])
    z = (rep.vectors.astype(np.float64) - mean) / std
    groups = np.asarray(groups) if groups is not None else np.arange(len(ds))
    for a, b in ((obs, sim), (sim, obs)):
        try:
            res = ood_score(z[a], z[b], k=r.k, percentile=r.percentile, standardise=None,
                            max_samples=r.subsample, seed=params.analyse.seed,
                            groups_a=groups[a], groups_b=groups[b])
        except ValueError as err:     # too few objects for k
            logger.warning("OOD scores not computed: %s", err)
            continue
        out[np.flatnonzero(a)[res.indices]] = res.scores
    return out


class RunData:
    """One analysed run, loaded for exploring.

    Parameters: ``params`` (the validated :class:`scripts.params.Params`; ``analyse.RUN_NAME``
    names the run), the folders of the stages (``dataset_root``, ``models_root``,
    ``reports_root``, and ``raw_root``/``illustris_root`` for the extract settings of new
    FITS files), ``max_points`` (points drawn at most), ``embedder`` (overrides the run's
    encoder; tests).

    Attributes: ``table`` (one row per embedded image: identity, map coordinates, FIELDS,
    ``ood_score``, posterior columns), ``vectors`` (row-aligned), ``fields`` (colourable
    numeric columns), ``shown`` (positions drawn), ``message`` (what the page says about
    subsampling).
    """

    def __init__(self, params, dataset_root, models_root, reports_root, raw_root=None,
                 illustris_root=None, max_points: int = MAX_POINTS, embedder=None,
                 with_ood: bool = True):
        from scripts.analysis.inputs import ImageAccess, attach_fields

        an = params.analyse
        self.params = params
        self.run_name = an.run_name
        self.dataset_root, self.models_root = Path(dataset_root), Path(models_root)
        self.report_dir = Path(reports_root) / an.run_name
        self.raw_root, self.illustris_root = raw_root, illustris_root
        self.observed, self.simulated = list(an.observed_sets), list(an.simulated_sets)
        self._embedder = embedder

        rep = read_representation(self.report_dir / REPRESENTATION_FILE)
        coords_path = self.report_dir / "map_coordinates.parquet"
        if not coords_path.exists():
            raise FileNotFoundError(f"{coords_path} does not exist; run the analyse stage "
                                    f"(python -m scripts.analyse) for run {an.run_name}")
        coords = pd.read_parquet(coords_path)
        meta = rep.meta.reset_index(drop=True)
        if len(coords) != len(meta) or not (coords[["dataset", "row"]].to_numpy()
                                            == meta[["dataset", "row"]].to_numpy()).all():
            raise ValueError(f"{coords_path} is not row-aligned with {REPRESENTATION_FILE}; "
                             "rerun the analyse stage")
        self.map_columns = [c for c in coords.columns if c.startswith(("umap_", "pca_"))]
        table, fields_by = attach_fields(meta, params, self.dataset_root)
        table = pd.concat([table, coords[self.map_columns]], axis=1)
        groups = None
        splits_path = self.dataset_root / "splits.parquet"
        if splits_path.exists():
            splits = pd.read_parquet(splits_path, columns=["dataset", "row", "split_group"])
            groups = (splits.set_index(["dataset", "row"])["split_group"]
                      .reindex(pd.MultiIndex.from_frame(meta[["dataset", "row"]])).to_numpy())
        table[OOD] = ood_scores(rep, groups, self.observed, self.simulated, params) if with_ood \
            else np.nan
        posterior = read_posterior(self.report_dir, meta)
        table = pd.concat([table, posterior], axis=1)
        self.table, self.vectors = table, rep.vectors
        self.rep = Representation(meta, rep.vectors)
        self.fields_by = fields_by
        field_names = list(dict.fromkeys(f for fs in fields_by.values() for f in fs))
        self.fields = field_names + list(posterior.columns) + ([OOD] if with_ood else [])
        self.datasets = list(pd.unique(meta["dataset"]))
        self.splits = list(pd.unique(meta["split"]))
        self.shown = subsample(len(table), max_points, an.seed)
        self.message = (f"{len(table):,} images" if len(self.shown) == len(table) else
                        f"showing a seeded subsample of {len(self.shown):,} of {len(table):,} "
                        "images (every image still takes part in the neighbour searches)")
        self.images = ImageAccess(self.dataset_root, self.datasets, params)
        self._finders: dict = {}
        self.thumbnail = lru_cache(maxsize=4096)(self._thumbnail)
        self.new_images: list[NewImage] = []

    def hover_fields(self, n: int) -> list[str]:
        """Up to ``n`` FIELDS, taken in turn from each dataset's own, so every dataset's
        points show some of theirs."""
        out: list[str] = []
        lists = [list(f) for f in self.fields_by.values()]
        for i in range(max((len(f) for f in lists), default=0)):
            for fields in lists:
                if i < len(fields) and fields[i] not in out and len(out) < n:
                    out.append(fields[i])
        return out

    # ------------------------------------------------------------------ images
    def display(self, positions) -> list[np.ndarray]:
        """Display images (H, W, 3) of table positions with ONE stretch (the report's
        :func:`scripts.analysis.plots.display_common`), so they compare in brightness."""
        from scripts.analysis import plots

        positions = np.asarray(positions, dtype=np.int64)
        raws, bands = [], []
        for p in positions:
            name, row = self.table.at[p, "dataset"], int(self.table.at[p, "row"])
            raws.append(self.images.read(name, [row])[0])
            bands.append(self.images.band_index(name))
        return plots.display_common(raws, bands) if raws else []

    def _thumbnail(self, position: int) -> bytes:
        return png_bytes(self.display([position])[0])

    def new_thumbnail(self, index: int) -> bytes:
        from scripts.analysis import plots

        new = self.new_images[index]
        band = self.images.band_index(self.observed[0]) if self.observed else None
        return png_bytes(plots.display_common([new.image], [band])[0])

    # ------------------------------------------------------------------ neighbours
    def reference_for(self, dataset: str | None) -> str:
        """The set whose mean/std standardise a query of ``dataset``: the dataset itself
        when observed (as the analyse stage does), else the first observed set (else the
        query's own set)."""
        if dataset in self.observed:
            return dataset
        return self.observed[0] if self.observed else dataset

    def finder(self, reference: str, target: str) -> AnalogueFinder:
        key = (reference, target)
        if key not in self._finders:
            ref = self.vectors[(self.table["dataset"] == reference).to_numpy()]
            self._finders[key] = AnalogueFinder.from_representation(
                self.rep, [target], ref, seed=self.params.analyse.seed)
        return self._finders[key]

    def neighbours_of_vector(self, vector, reference: str, exclude: str | None = None,
                             k: int | None = None) -> pd.DataFrame:
        """The ``k`` (default ``analyse.N_ANALOGUES``) nearest images of every dataset other
        than ``exclude``; columns dataset, position (into ``table``), rank, distance
        (standardised units, L2), object_id, row."""
        k = int(k or self.params.analyse.n_analogues)
        parts = []
        for target in self.datasets:
            if target == exclude:
                continue
            finder = self.finder(reference, target)
            dist, idx = finder.query(np.asarray(vector, np.float32)[None], k)
            idx, dist = idx[0], dist[0]
            keep = idx >= 0
            where = np.flatnonzero((self.table["dataset"] == target).to_numpy())[idx[keep]]
            parts.append(pd.DataFrame({"dataset": target, "position": where,
                                       "rank": np.arange(1, keep.sum() + 1),
                                       "distance": dist[keep].astype(np.float64)}))
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["dataset", "position", "rank", "distance"])
        out["object_id"] = self.table["object_id"].to_numpy()[out["position"].to_numpy(np.int64)]
        out["row"] = self.table["row"].to_numpy()[out["position"].to_numpy(np.int64)]
        return out

    def neighbours(self, position: int, k: int | None = None) -> pd.DataFrame:
        """Nearest images of the point at ``position`` in every other dataset."""
        dataset = self.table.at[position, "dataset"]
        return self.neighbours_of_vector(self.vectors[position], self.reference_for(dataset),
                                         exclude=dataset, k=k)

    def simulated_analogues(self, position: int, k: int | None = None) -> pd.DataFrame:
        """The ``k`` nearest simulated images (sets pooled) of an image: the rows of the
        analyse stage's ``analogues.parquet`` for an observed image."""
        table = self.neighbours(position, k)
        table = table[table["dataset"].isin(self.simulated)]
        k = int(k or self.params.analyse.n_analogues)
        return table.sort_values("distance", kind="stable").head(k).reset_index(drop=True)

    # ------------------------------------------------------------------ regions, realism
    def region_histogram(self, field_name: str, selected, bins: int = 30):
        """Density histograms of ``field_name`` over the selected positions and over all
        drawn points: ``(edges, selected_density, all_density)``; None when no finite value."""
        values = self.table[field_name].to_numpy(dtype=np.float64)
        every = values[self.shown]
        every = every[np.isfinite(every)]
        chosen = values[np.asarray(selected, dtype=np.int64)]
        chosen = chosen[np.isfinite(chosen)]
        if len(every) == 0:
            return None
        lo, hi = float(every.min()), float(every.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        all_d, _ = np.histogram(every, edges, density=True)
        sel_d = np.histogram(chosen, edges, density=True)[0] if len(chosen) else np.zeros(bins)
        return edges, sel_d, all_d

    def unmatched_observed(self, limit: int | None = None) -> pd.DataFrame:
        """Observed images with no simulated counterpart (OOD score > 1), highest first."""
        t = self.table
        mask = t["dataset"].isin(self.observed).to_numpy() & (t[OOD].to_numpy() > 1.0)
        out = t.loc[mask, IDENTITY + [OOD]].sort_values(OOD, ascending=False)
        out.insert(0, "position", out.index.to_numpy())
        return out.head(limit) if limit else out

    # ------------------------------------------------------------------ new images
    @property
    def embedder(self):
        """The run's encoder, loaded on first use (it takes seconds) and checked against
        the representation table's fingerprint."""
        if self._embedder is None:
            from scripts.analysis.representation import Embedder

            self._embedder = Embedder.from_run(self.models_root / self.run_name,
                                               self.params.analyse.batch_size)
            check_same_encoder(self.report_dir / REPRESENTATION_FILE, self._embedder, self.run_name)
        return self._embedder

    def add_fits(self, path, name: str | None = None) -> NewImage:
        """Process one FITS file as extract does for the first observed set, embed it, place
        it on the maps and find its neighbours. A bad file gives a :class:`NewImage` with
        the extract stage's skip reason; this never raises for a bad file."""
        name = name or Path(path).name
        observed = self.observed[0] if self.observed else self.datasets[0]
        if not Path(path).is_file():
            return NewImage(name, reason="missing", detail=f"{path} is not a file")
        result = fits_reader(self.params, observed, self.raw_root, self.illustris_root)(path)
        if result.image is None:
            return NewImage(name, reason=result.reason, detail=result.detail)
        why = self.embedder.accepts(result.image.shape)
        if why:
            return NewImage(name, reason="shape", detail=why)
        vector = self.embedder(result.image[None])[0]
        new = NewImage(name, image=result.image, vector=vector)
        new.neighbours = self.neighbours_of_vector(vector, self.reference_for(observed))
        near = new.neighbours.sort_values("distance").head(PLACE_NEIGHBOURS)["position"].to_numpy()
        new.position = {c: float(self.table[c].to_numpy()[near].mean()) for c in self.map_columns}
        self.new_images.append(new)
        return new

    def add_fits_bytes(self, content: bytes, filename: str) -> NewImage:
        """:meth:`add_fits` of uploaded bytes (written to a temporary file that keeps the
        upload's name, so a file named like the dataset's images gets its identity)."""
        safe = Path(filename or "upload.fits").name or "upload.fits"
        with tempfile.TemporaryDirectory(prefix="explore-") as tmp:
            path = Path(tmp) / safe
            path.write_bytes(content)
            return self.add_fits(path, name=safe)

    def close(self) -> None:
        self.images.close()


def open_run(params, run_name: str | None = None, **kwargs) -> RunData:
    """:class:`RunData` of ``run_name`` (default ``analyse.RUN_NAME``) in the configured
    folders (``config.py``, environment overrides)."""
    import config

    if run_name:
        params = dataclasses.replace(params, analyse=dataclasses.replace(params.analyse,
                                                                         run_name=run_name))
    return RunData(params, config.dataset_path, config.models_path, config.reports_path,
                   config.dataset_raw_path, config.illustris_path, **kwargs)
