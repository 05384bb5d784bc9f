"""Simulated analogues of observed galaxies: nearest neighbours in representation space.

For each observed object the ``k`` nearest simulated objects (all simulated sets pooled)
under the Euclidean distance between representations standardised with the observed
set's per-dimension mean and standard deviation (the observed set is the reference, as
in :func:`scripts.analysis.realism.compare_sets`). The search is a
:class:`scripts.analysis.neighbours.NeighbourIndex` (exact up to a million simulated
images, IVF beyond), built from the simulated vectors chunk by chunk.

Command line, for new images::

    python -m scripts.analysis.analogues --params params.yaml FITS [FITS ...]

reads each FITS file with the extract stage's own read/crop/resize
(:func:`scripts.preprocessing.image_preprocessing.process_image`, with the settings of the
observed dataset given by ``--dataset``, default the first of ``analyse.OBSERVED_SETS``),
embeds it with the analysed run's normalisation and encoder, and logs and plots its analogues among
the simulated objects of the run's own ``reports/<run>/representation.parquet`` (run the
analyse stage first), whose simulated vectors it streams batch by batch into the index (and
the observed set's, for the mean/std that standardise). It refuses a representation table made by another encoder than
``models/<run>/`` holds now (their fingerprints differ): distances between vectors of two
encoders mean nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

import config
from scripts.analysis.neighbours import NeighbourIndex
from scripts.analysis.representation import (REPRESENTATION_FILE, Embedder, Representation,
                                             VectorSource, count_rows, iter_vectors, read_meta,
                                             representation_metadata, standardiser,
                                             streamed_standardiser)
from scripts.fingerprint import encoder_fingerprint

logger = logging.getLogger("scripts.analysis.analogues")  # also under python -m

ANALOGUE_COLUMNS = ["observed_dataset", "observed_row", "observed_object_id", "rank",
                    "simulated_dataset", "simulated_row", "simulated_object_id",
                    "simulated_snapshot", "simulated_projection", "distance"]
#: Simulated vectors standardised and added to the index per chunk.
CHUNK_ROWS = 65536


class AnalogueFinder:
    """Nearest simulated objects of query representations.

    ``meta`` is the identity table of the simulated rows (all simulated sets pooled) and
    ``chunks`` a zero-argument callable returning their vectors, row-aligned with ``meta``,
    as an iterable of (n_i, D) chunks; ``reference`` holds the observed vectors whose
    mean/std standardise every vector, or that ``(mean, std)`` pair itself (e.g. from
    :func:`scripts.analysis.representation.streamed_standardiser`). The index is built chunk by chunk
    (:meth:`NeighbourIndex.fit_chunks`), each chunk standardised on its own: z-scoring is
    row-wise, so the index equals one built from the whole standardised set, which is never
    held beside faiss's copy. Build one with :meth:`from_representation` (vectors in memory)
    or :meth:`from_file` (streamed from ``representation.parquet``). :meth:`query` returns
    distances (standardised units) and positions into ``meta``.
    """

    def __init__(self, meta: pd.DataFrame, chunks: Callable[[], Iterable[np.ndarray]], reference,
                 seed: int = 0):
        if len(meta) == 0:
            raise ValueError("no simulated representation to search; check analyse.SIMULATED_SETS")
        self.meta = meta.reset_index(drop=True)
        self.mean, self.std = reference if isinstance(reference, tuple) else standardiser(reference)
        self.index = NeighbourIndex(metric="l2", seed=seed).fit_chunks(
            lambda: (self._z(chunk) for chunk in chunks()), n=len(self.meta))

    @classmethod
    def from_representation(cls, rep: Representation, datasets: Sequence[str], reference,
                            seed: int = 0, chunk_rows: int = CHUNK_ROWS) -> "AnalogueFinder":
        """The rows of ``datasets`` in an in-memory :class:`Representation`, read in slices of
        ``chunk_rows`` (no copy of the selected vectors is made)."""
        mask = rep.meta["dataset"].isin(list(datasets)).to_numpy()
        vectors = rep.vectors

        def chunks():
            for start in range(0, len(vectors), chunk_rows):
                stop = start + chunk_rows
                yield vectors[start:stop][mask[start:stop]]

        return cls(rep.meta[mask], chunks, reference, seed)

    @classmethod
    def from_file(cls, path: str | Path, datasets: Sequence[str], reference, seed: int = 0,
                  batch_size: int = CHUNK_ROWS) -> "AnalogueFinder":
        """The rows of ``datasets`` in ``representation.parquet``, streamed ``batch_size`` rows
        at a time (:func:`iter_vectors`); only their identity columns are read whole."""
        datasets = list(datasets)
        return cls(read_meta(path, datasets), lambda: iter_vectors(path, datasets, batch_size),
                   reference, seed)

    def _z(self, vectors) -> np.ndarray:
        return ((np.asarray(vectors, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def query(self, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(int(k), len(self.meta))
        return self.index.kneighbors(self._z(vectors), k)


def analogue_table(finder: AnalogueFinder, queries: pd.DataFrame, vectors, k: int) -> pd.DataFrame:
    """Long table: one row per (query, rank) with the analogue's identity and distance.

    ``queries`` has columns ``dataset``, ``row``, ``object_id`` (row-aligned with
    ``vectors``); rank 1 is the nearest.
    """
    distances, indices = finder.query(vectors, k)
    k = indices.shape[1]
    sim = finder.meta
    pos = indices.ravel()
    valid = pos >= 0
    pos_safe = np.where(valid, pos, 0)
    out = pd.DataFrame({
        "observed_dataset": np.repeat(queries["dataset"].to_numpy(), k),
        "observed_row": np.repeat(queries["row"].to_numpy(), k),
        "observed_object_id": np.repeat(queries["object_id"].to_numpy(), k),
        "rank": np.tile(np.arange(1, k + 1), len(queries)),
        "simulated_dataset": sim["dataset"].to_numpy()[pos_safe],
        "simulated_row": sim["row"].to_numpy()[pos_safe],
        "simulated_object_id": sim["object_id"].to_numpy()[pos_safe],
        "simulated_snapshot": sim["snapshot"].to_numpy()[pos_safe],
        "simulated_projection": sim["projection"].to_numpy()[pos_safe],
        "distance": distances.ravel().astype(np.float64),
    })
    return out[valid].reset_index(drop=True)[ANALOGUE_COLUMNS]


def find_analogues(source: VectorSource, meta: pd.DataFrame, observed: str, simulated: Sequence[str],
                   k: int, seed: int = 0) -> pd.DataFrame:
    """Analogues of every object of the observed dataset ``observed`` among ``simulated``.

    ``source`` streams the vectors of the representation table whose identity table is
    ``meta`` (:func:`read_meta`, file order). Nothing is held whole but faiss's index of the
    simulated vectors: the observed set's standardiser is accumulated chunk by chunk, the
    index is built from chunks, and the observed images are queried a chunk at a time."""
    datasets = meta["dataset"].to_numpy()
    obs_meta = meta[datasets == observed].reset_index(drop=True)
    if len(obs_meta) == 0:
        raise ValueError(f"no representation of observed dataset {observed}")
    simulated = list(simulated)
    finder = AnalogueFinder(meta[np.isin(datasets, simulated)], lambda: source.chunks(simulated),
                            source.standardiser([observed]), seed)
    tables, start = [], 0
    for chunk in source.chunks([observed]):
        tables.append(analogue_table(finder, obs_meta.iloc[start:start + len(chunk)], chunk, k))
        start += len(chunk)
    table = pd.concat(tables, ignore_index=True)
    logger.info("%s: %d analogues of %d objects among %d simulated images", observed, len(table),
                len(obs_meta), len(finder.meta))
    return table


def analogue_shares(table: pd.DataFrame) -> dict[str, float]:
    """Fraction of all analogues that come from each simulated dataset."""
    counts = table["simulated_dataset"].value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.items()}


def choose_queries(object_ids, wanted: Sequence[int] | None, n: int, seed: int) -> list:
    """Object ids to show as panels: ``wanted`` that exist (missing ones logged), or ``n``
    drawn at random (seeded) when ``wanted`` is None."""
    available = pd.unique(np.asarray(object_ids))
    if wanted is not None:
        present = [o for o in wanted if o in set(available.tolist())]
        absent = [o for o in wanted if o not in present]
        if absent:
            logger.warning("analyse.ANALOGUE_OBJECTS %s are not among the analysed observed "
                           "objects; left out of the panels", absent)
        return present
    rng = np.random.default_rng(seed)
    take = min(n, len(available))
    return sorted(rng.choice(available, size=take, replace=False).tolist())


def panel_entries(table: pd.DataFrame, query_images: dict, query_labels: dict,
                  read_images: Callable[[str, np.ndarray], np.ndarray],
                  band_index: Callable[[str], Sequence[int] | None]) -> list[dict]:
    """Inputs of :func:`scripts.analysis.plots.plot_analogue_panels`.

    ``table`` holds the analogue rows of the queries (column ``query`` keys them);
    ``query_images[key]`` is ``(dataset, raw image (H, W, C))`` and ``query_labels[key]``
    its title; ``read_images(dataset, rows)`` returns raw images of a simulated dataset;
    ``band_index(dataset)`` the bands shown as RGB (None: grey). Each row (query and its
    analogues) shares one display stretch, so brightness is comparable along it.
    """
    from scripts.analysis.plots import display_common

    entries = []
    for key, rows in table.groupby("query", sort=False):
        rows = rows.sort_values("rank")
        query_dataset, query = query_images[key]
        raws, indices, labels = [query], [band_index(query_dataset)], []
        for _, hit in rows.iterrows():
            raws.append(read_images(hit["simulated_dataset"], np.array([hit["simulated_row"]]))[0])
            indices.append(band_index(hit["simulated_dataset"]))
            labels.append(f"{hit['simulated_dataset']}\n#{hit['simulated_object_id']} "
                          f"s{hit['simulated_snapshot']} v{hit['simulated_projection']}"
                          f"\nd = {hit['distance']:.2f}")
        shown = display_common(raws, indices)
        entries.append({"image": shown[0], "label": query_labels[key],
                        "analogues": list(zip(shown[1:], labels))})
    return entries


# --------------------------------------------------------------------------- CLI
def fits_reader(params, observed: str, raw_root: Path, illustris_root: Path) -> Callable:
    """A function ``path -> ImageResult`` that reads, crops and resizes one FITS file like
    extract does for dataset ``observed``: ``result.image`` (H, W, C), or ``None`` with the
    extract stage's skip ``reason`` and ``detail``; it never raises for a bad file. A file
    named like the dataset's images gets the padding noise seed extract gives it (its
    identity), so an image already in the dataset is processed exactly as it was stored.
    """
    from scripts.preprocessing.dataset_kinds import IDENTITY, make_extractor
    from scripts.preprocessing.image_preprocessing import process_image
    from scripts.preprocessing.noise import identity_seed

    spec = params.extract.dataset(observed)
    extractor = make_extractor(spec, params.extract, raw_root, illustris_root,
                               config.snapshot_redshifts_path)
    crop = extractor.crop_spec()
    extnames = tuple(spec.band_extnames[f] for f in spec.filters)

    def read(path):
        ident = extractor.parse_name(Path(path).name)
        seed = identity_seed(observed, *(int(ident[c]) for c in IDENTITY)) if ident else None
        return process_image(str(path), extnames, spec.filters, crop, params.extract.image_size, {},
                             seed)

    return read


def process_fits(paths: Sequence[str | Path], params, observed: str,
                 raw_root: Path, illustris_root: Path) -> tuple[list[str], np.ndarray]:
    """Read, crop and resize FITS files like extract does for dataset ``observed``
    (:func:`fits_reader`).

    Returns the names that could be processed and their images (N, H, W, C); files that
    cannot be used are logged with the extract stage's reason code.
    """
    read = fits_reader(params, observed, raw_root, illustris_root)
    names, images = [], []
    for path in paths:
        result = read(path)
        if result.image is None:
            logger.error("%s: skipped (%s: %s)", path, result.reason, result.detail)
            continue
        names.append(str(path))
        images.append(result.image)
    spec = params.extract.dataset(observed)
    shape = (0, params.extract.image_size, params.extract.image_size, len(spec.filters))
    return names, (np.stack(images) if images else np.empty(shape, np.float32))


def check_same_encoder(rep_path: Path, embedder: Embedder, run_name: str) -> None:
    """Raise when ``rep_path`` was not written with the encoder of ``embedder``."""
    if not rep_path.exists():
        raise FileNotFoundError(f"{rep_path} does not exist; run the analyse stage "
                                f"(python -m scripts.analyse) for run {run_name} first")
    recorded = representation_metadata(rep_path).get("encoder_fingerprint")
    current = encoder_fingerprint(embedder.encoder, embedder.normalisation)
    if recorded != current:
        raise ValueError(f"{rep_path} was made by another encoder (fingerprint {recorded}) than "
                         f"models/{run_name} holds now ({current}); rerun python -m scripts.analyse "
                         "for this run before searching analogues")


def run_cli(params, fits_paths: Sequence[str | Path], dataset_root: Path, models_root: Path,
            reports_root: Path, out_dir: Path | None, raw_root: Path, illustris_root: Path,
            observed: str | None = None, k: int | None = None,
            embedder: Embedder | None = None) -> pd.DataFrame:
    """Analogues of new FITS images (see module docstring); returns the analogue table with
    a ``file`` column, also written to ``out_dir/analogues.csv`` (default
    ``reports/<run>/new_analogues``) with a panel PNG."""
    from scripts.analysis import plots
    from scripts.model.input_pipeline import HDF5Images
    from scripts.analysis.representation import store_path

    an = params.analyse
    observed = observed or (an.observed_sets[0] if an.observed_sets else None)
    if observed is None:
        raise ValueError("no observed dataset: give --dataset or set analyse.OBSERVED_SETS")
    if not an.simulated_sets:
        raise ValueError("analyse.SIMULATED_SETS is empty: there is nothing to find analogues in")
    k = int(k or an.n_analogues)
    rep_path = Path(reports_root) / an.run_name / REPRESENTATION_FILE
    out_dir = Path(out_dir or Path(reports_root) / an.run_name / "new_analogues")
    embedder = embedder or Embedder.from_run(models_root / an.run_name, an.batch_size)
    check_same_encoder(rep_path, embedder, an.run_name)
    names, images = process_fits(fits_paths, params, observed, raw_root, illustris_root)
    if not names:
        raise ValueError("none of the given FITS files could be read (see the errors above)")
    reason = embedder.accepts(images.shape[1:])
    if reason:
        raise ValueError(f"the processed images do not fit the encoder of run {an.run_name}: {reason}")
    vectors = embedder(images)
    if count_rows(rep_path, [observed]) == 0:
        raise ValueError(f"{rep_path} has no rows of {observed}; run the analyse stage with it "
                         "in analyse.OBSERVED_SETS")
    reference = streamed_standardiser(iter_vectors(rep_path, [observed]))
    finder = AnalogueFinder.from_file(rep_path, an.simulated_sets, reference, seed=an.seed)
    queries = pd.DataFrame({"dataset": "new", "row": np.arange(len(names)),
                            "object_id": np.arange(len(names))})
    table = analogue_table(finder, queries, vectors, k)
    table.insert(0, "file", [names[i] for i in table["observed_row"]])
    table = table.drop(columns=["observed_dataset", "observed_object_id"])
    for name, rows in table.groupby("file", sort=False):
        logger.info("analogues of %s:\n%s", name, rows.drop(columns=["file", "observed_row"])
                    .to_string(index=False))
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "analogues.csv", index=False)

    reader = HDF5Images({n: store_path(dataset_root, n) for n in an.simulated_sets})
    index = {n: i for i, n in enumerate(an.simulated_sets)}
    filters = {n: params.extract.dataset(n).filters for n in [observed, *an.simulated_sets]}

    def read(dataset, rows):
        return reader.read(np.full(len(rows), index[dataset]), rows)

    def band_index(dataset):
        return plots.band_indices(filters[dataset], an.rgb_bands)

    try:
        panel = table.assign(query=table["observed_row"])
        entries = panel_entries(panel, {i: (observed, images[i]) for i in range(len(names))},
                                {i: f"{Path(names[i]).name}" for i in range(len(names))},
                                read, band_index)
        path = plots.plot_analogue_panels(entries, out_dir / "analogues.png",
                                          f"Simulated analogues (run {an.run_name})")
    finally:
        reader.close()
    logger.info("wrote %s and %s", out_dir / "analogues.csv", path)
    return table


def main(argv=None) -> int:
    from scripts.params import ParamsError, add_params_argument, load_params

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    parser = argparse.ArgumentParser(description="Simulated analogues of new FITS images.")
    add_params_argument(parser)
    parser.add_argument("fits", nargs="+", type=Path, help="FITS files (same layout as the "
                        "observed dataset's images)")
    parser.add_argument("--dataset", default=None, help="observed dataset whose extract "
                        "settings (bands, cropper) apply; default: first of analyse.OBSERVED_SETS")
    parser.add_argument("--k", type=int, default=None, help="analogues per image "
                        "(default analyse.N_ANALOGUES)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default reports/<run>/new_analogues)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        run_cli(params, args.fits, config.dataset_path, config.models_path, config.reports_path,
                args.out, config.dataset_raw_path, config.illustris_path, observed=args.dataset,
                k=args.k)
    except (ParamsError, FileNotFoundError, KeyError, ValueError) as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
