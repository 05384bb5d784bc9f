"""Extract stage: FITS images + catalogues → ``dataset/<DATASET>/{objects.parquet, images.h5}``.

``python -m scripts.preprocessing.extract [--params P]``

For every dataset with ``LOAD: true``:

1. the extractor lists the image files and parses their identity from the file name;
   names that do not match are reported, never guessed. ``FILE_LAYOUTS`` says how an
   object's bands are stored: ``extensions`` (one file, one HDU per band), ``band_files``
   (one file per band, grouped by the pattern's ``filter`` group; the object is named
   after its first band's file) or ``cube`` (one (bands, H, W) HDU);
2. the catalogue selects objects (mass range, ``SubhaloFlag``) and provides the FIELDS;
   images without a catalogue row and catalogue objects without an image are reported.
   ``CATALOGUE_MATCH: sky`` joins survey images by position instead of id (images beyond
   ``MATCH_RADIUS_ARCSEC`` and rows claimed twice are reported; ``match_sep_arcsec`` is
   stored per object);
3. ``FRACTION`` keeps a seeded, identity-based subset of objects (all projections of a
   chosen object stay together);
4. each image is read by EXTNAME, cropped (Petrosian / R200c / fraction), area-resized to
   ``IMAGE_SIZE`` and measured (Petrosian radii and magnitudes) in ``NUM_WORKERS``
   processes (joblib), or on the workers of a Dask cluster (``JOBLIB_BACKEND: dask``, see
   :mod:`workers`). A broken file is skipped with its reason, never stopping the run;
5. results are committed in chunks of ``SIZE_CHUNKS`` images to ``.cache/`` (atomic
   writes), so a run killed at any point resumes from the finished chunks
   (``USE_CACHE``); new files are processed alone, and a change of FIELDS only re-joins
   the labels. The final table and store are written in the identity order, so a resumed
   run and an uninterrupted one give identical outputs. With ``SHARD_SIZE`` the store is
   split into shard files ``images-00000.h5``, … of that many images, indexed by
   ``images.h5`` (an HDF5 virtual dataset, see :mod:`scripts.image_store`), and a rerun
   rewrites only the shards whose images changed. ``STORE_DTYPE`` float16 stores the
   pixels at half the size: they are converted when the store is assembled (the chunk
   cache and the per-image processing stay float32), and a finite pixel that float16
   cannot hold stops the run with an error naming the images (never an infinite pixel);
6. ``extract_report.json`` lists every skipped object with its reason.

The process exits non-zero only when a loaded dataset ends with no usable object.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import joblib
import numpy as np
import pandas as pd
from tqdm import tqdm

import config
from scripts import image_store
from scripts.image_store import IMAGES_FILE, IMAGES_KEY
from scripts.params import DatasetSpec, ExtractParams
from scripts.preprocessing.chunk_cache import ChunkCache
from scripts.preprocessing import workers
from scripts.preprocessing.croppers import outside_summary
from scripts.preprocessing.dataset_kinds import (IDENTITY, Extractor, image_field_names,
                                                 make_extractor)
from scripts.preprocessing.image_preprocessing import PROCESSING_VERSION, process_image
from scripts.preprocessing.noise import identity_seed
from scripts.stage import run_stage

log = logging.getLogger("extract")

#: Per-row provenance of the finished store (file size/mtime, measurements): the cache
#: that lets a later run reuse finished images.
PROVENANCE = ".provenance.parquet"


# --------------------------------------------------------------------------- one dataset

def _stable_unit(seed: int, *parts) -> float:
    digest = hashlib.blake2b(repr((seed,) + parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def select_fraction(objects: pd.DataFrame, fraction: float, seed: int, dataset: str) -> pd.Series:
    """Seeded, identity-based selection of objects (stable when the set grows)."""
    if fraction >= 1:
        return pd.Series(True, index=objects.index)
    u = [_stable_unit(seed, dataset, int(s), int(o))
         for s, o in zip(objects["snapshot"], objects["object_id"])]
    return pd.Series(np.asarray(u) < fraction, index=objects.index)


def _fingerprint(spec: DatasetSpec, crop: dict, image_size: int) -> str:
    settings = {"version": PROCESSING_VERSION, "extnames": [spec.band_extnames[f] for f in spec.filters],
                "crop": crop, "image_size": image_size}
    if spec.file_layout != "extensions":  # (extensions: fingerprints of earlier runs stay valid)
        settings.update(layout=spec.file_layout, filters=list(spec.filters),
                        cube_bands=None if spec.cube_bands is None else list(spec.cube_bands))
    return json.dumps(settings, sort_keys=True)


def _previous_output(out_dir: Path, fingerprint: str, dtype: str) -> pd.DataFrame:
    """Records of the last finished run, reusable as cache when made with the same settings
    and stored at least as precisely as ``dtype`` (STORE_DTYPE) asks: float16 pixels are
    not float32 ones, so going back to float32 reprocesses the images."""
    table, store, marker = out_dir / PROVENANCE, out_dir / IMAGES_FILE, out_dir / "fingerprint.txt"
    if not (table.exists() and store.exists() and marker.exists()) or marker.read_text() != fingerprint:
        return pd.DataFrame()
    try:  # a sharded store whose shards are all there
        with image_store.open_store(store) as handle:
            stored = handle[IMAGES_KEY].dtype
    except (OSError, KeyError) as err:  # FileNotFoundError is an OSError
        log.warning("%s: not reusing the previous output (%s)", out_dir, err)
        return pd.DataFrame()
    if stored.itemsize < image_store.store_dtype(dtype).itemsize:
        log.info("%s: the previous store holds %s pixels, STORE_DTYPE is %s: processing its "
                 "images again", out_dir, stored, dtype)
        return pd.DataFrame()
    prev = pd.read_parquet(table)
    return prev.assign(reason="", detail="", chunk="__previous__")


def extract_dataset(extractor: Extractor, params: ExtractParams, out_root: Path) -> dict:
    """Run extract for one dataset; returns the report (also written to disk)."""
    spec = extractor.spec
    start = time.perf_counter()
    out_dir = out_root / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    files, unmatched, irregular = extractor.list_images()
    log.info("%s: %d image files (%d names not matching the pattern, %d not regular files)",
             spec.name, len(files), len(unmatched), len(irregular))

    match = extractor.catalogue(files)
    keys = pd.MultiIndex.from_frame(files[["snapshot", "object_id"]])
    has_fields = keys.isin(match.fields.index)
    objects = files.loc[has_fields, ["snapshot", "object_id"]].drop_duplicates()
    chosen = objects[select_fraction(objects, spec.fraction, params.selection_seed, spec.name)]
    chosen_keys = pd.MultiIndex.from_frame(chosen)
    work = files[keys.isin(chosen_keys)].reset_index(drop=True)

    crop = extractor.crop_spec()
    fingerprint = _fingerprint(spec, crop, params.image_size)
    cache = ChunkCache(out_dir / ".cache", fingerprint)
    cache.open(params.use_cache)
    images_dir = extractor.images_dir
    stats = {name: extractor.unit_stat(name) for name in work["file"]}

    previous = (_previous_output(out_dir, fingerprint, params.store_dtype) if params.use_cache
                else pd.DataFrame())
    cached = pd.concat([previous, cache.records()], ignore_index=True)
    if len(cached):
        current = cached["file"].map(lambda f: stats.get(f, (None, None)))
        fresh = [(s, m) == tuple(c) for s, m, c in zip(cached["size"], cached["mtime_ns"], current)]
        cached = cached[fresh].drop_duplicates("file", keep="last")
    done = set(cached["file"]) if len(cached) else set()
    fresh_records = [cached]
    todo = [f for f in work["file"] if f not in done]
    log.info("%s: %d images to process, %d reused from cache", spec.name, len(todo), len(work) - len(todo))

    # per-file arguments from plain dicts: pandas .loc per image cost this process more
    # CPU than its chunk commits, taken from the workers (profile in BENCHMARKS.md)
    inputs = extractor.crop_inputs(match.fields)
    crop_rows = inputs.to_dict("index") if len(inputs.columns) else {}
    identity = dict(zip(work["file"], work[list(IDENTITY)].itertuples(index=False, name=None)))
    extnames = tuple(spec.band_extnames[f] for f in spec.filters)
    image_shape = (params.image_size, params.image_size, len(spec.filters))

    def task(name):
        ident = tuple(int(v) for v in identity[name])  # object_id, snapshot, projection
        crop_in = crop_rows[ident[1], ident[0]] if crop_rows else {}
        seed = identity_seed(spec.name, *ident)
        return joblib.delayed(process_image)(str(images_dir / name), extnames, spec.filters, crop,
                                             params.image_size, crop_in, seed,
                                             extractor.load_spec(name))

    # the workers compute the next chunk while this process commits the last one
    chunks = ([task(n) for n in todo[begin:begin + params.size_chunks]]
              for begin in range(0, len(todo), params.size_chunks))
    results = workers.imap_chunks(chunks, params.joblib_backend, params.num_workers,
                                  params.dask_scheduler)
    with tqdm(total=len(todo), desc=spec.name, unit="img", disable=None) as bar, \
            contextlib.closing(results):
        for chunk in results:
            fresh_records.append(cache.write(chunk, stats, image_shape))
            bar.update(len(chunk))
            del chunk  # its images go before the next chunk is collected: two at most

    records = pd.concat(fresh_records, ignore_index=True)
    if records.empty:  # nothing selected: an empty store and a report that says why
        records = pd.DataFrame(columns=["file", "size", "mtime_ns", "reason", "detail", "index",
                                        "record", "chunk"])
    report = _assemble(extractor, params, out_dir, work, files, unmatched, irregular, match, cache,
                       fingerprint, records)
    report["file_layout"] = spec.file_layout
    if extractor.identity_report:  # sky matching: images left without a row, shared rows
        report.update(extractor.identity_report)
        report["images_found"] += (len(report["images_without_sky_match"])
                                   + sum(len(d["claims"]) - 1 for d in report["duplicate_sky_matches"]))
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["reused_from_cache"] = len(work) - len(todo)
    report["processed"] = len(todo)
    (out_dir / "extract_report.json").write_text(json.dumps(report, indent=1))
    cache.clear()
    _log_summary(report)
    return report


def _assemble(extractor, params, out_dir, work, files, unmatched, irregular, match, cache,
              fingerprint, records: pd.DataFrame) -> dict:
    """Write objects.parquet and images.h5 in identity order.

    ``records`` has one up-to-date record per file of ``work``: the reusable ones found at
    the start (previous run, interrupted chunks) plus those of the chunks written now.
    ``irregular``: entries named like images that are not regular files (skipped with
    reason ``not_a_regular_file``, listed first).
    """
    spec = extractor.spec
    rec = records.set_index("file").loc[work["file"]]
    ok = (rec["reason"] == "").to_numpy()
    skipped = list(irregular) + [{"file": f, "reason": r, "detail": d} for f, r, d in
                                 zip(rec.index[~ok], rec["reason"][~ok], rec["detail"][~ok])]
    kept = work[ok].reset_index(drop=True)
    sources = rec[ok]

    measured = pd.DataFrame([json.loads(r) for r in sources["record"]]) if len(kept) else pd.DataFrame()
    table = kept.copy()
    table.insert(0, "dataset", spec.name)
    table.insert(1, "row", np.arange(len(kept), dtype=np.int64))
    fields = match.fields.reindex(pd.MultiIndex.from_frame(kept[["snapshot", "object_id"]])).reset_index(drop=True)
    image_fields = set(image_field_names(spec.filters))
    for name in spec.fields:
        if name in IDENTITY:
            continue
        if name in image_fields:
            table[name] = measured[name].to_numpy() if name in measured else np.nan
        else:
            table[name] = fields[name].to_numpy()
    for column in measured.columns:  # cropper radii and flags
        if column not in table.columns:
            table[column] = measured[column].to_numpy()
    provenance = pd.DataFrame({"file": kept["file"], "size": sources["size"].to_numpy(np.int64),
                               "mtime_ns": sources["mtime_ns"].to_numpy(np.int64),
                               "index": table["row"], "record": sources["record"].to_numpy()})

    shape = (params.image_size, params.image_size, len(spec.filters))
    written, shard_rows = _write_images(out_dir, params, shape, spec.filters, sources, cache,
                                        spec.name)
    table_tmp, provenance_tmp = out_dir / ".objects.parquet.tmp", out_dir / ".provenance.tmp"
    table.to_parquet(table_tmp, index=False)
    provenance.to_parquet(provenance_tmp, index=False)
    # the marker goes first and comes back last: a kill in between leaves no reusable
    # "previous output", only the chunk cache, which is still complete
    (out_dir / "fingerprint.txt").unlink(missing_ok=True)
    for tmp, final in written:  # new shards (then their index), or the single-file store
        os.replace(tmp, final)
    os.replace(table_tmp, out_dir / "objects.parquet")
    os.replace(provenance_tmp, out_dir / PROVENANCE)
    in_use = {image_store.shard_name(k) for k in range(len(shard_rows))}
    for stale in image_store.shard_files(out_dir):  # shards past the end, or of an earlier layout
        if stale.name not in in_use:
            stale.unlink()
    (out_dir / "fingerprint.txt").write_text(fingerprint)

    per_object = kept.groupby(["snapshot", "object_id"]).size()
    incomplete = per_object[per_object < spec.num_projections]
    return {
        "dataset": spec.name,
        "extractor": spec.extractor,
        "pad_mode": extractor.pad_mode,
        "images_found": int(len(files) + len(unmatched) + len(irregular)),
        "objects_with_catalogue_row": int(len(match.fields)),
        "images_selected": int(len(work)),
        "kept_images": int(len(kept)),
        "kept_objects": int(len(per_object)),
        "skipped_counts": dict(Counter(s["reason"] for s in skipped)),
        "skipped_files": skipped,
        "unmatched_names": unmatched,
        "images_without_catalogue_row": [list(k) for k in match.no_row],
        "images_outside_selection": [list(k) for k in match.not_selected],
        "catalogue_objects_without_image": [list(k) for k in match.without_image],
        "incomplete_projections": [{"snapshot": int(s), "object_id": int(o), "found": int(n),
                                    "expected": spec.num_projections}
                                   for (s, o), n in incomplete.items()],
        "crop_failed": int(table["crop_failed"].sum()) if "crop_failed" in table else 0,
        "petrosian_failed": (int((table["petrosian_failure"].fillna("") != "").sum())
                             if "petrosian_failure" in table else 0),
        "crop_outside": outside_summary(table),
        "nan_repaired_images": int((table["nan_repaired"] > 0).sum()) if "nan_repaired" in table else 0,
        "shards": len(shard_rows),
        "shards_written": len(written) - 1 if shard_rows else 0,
    }


def _write_images(out_dir: Path, params: ExtractParams, shape: tuple[int, int, int], filters,
                  sources: pd.DataFrame, cache: ChunkCache,
                  dataset: str) -> tuple[list[tuple[Path, Path]], list[int]]:
    """Write the image store of the kept rows under temporary names, in ``STORE_DTYPE``.

    ``sources`` (one row per kept image, in store order, indexed by file) names where each
    image is now: its ``chunk`` of the cache (``__previous__``: the previous store) and
    ``index`` there.
    Returns ``([(temporary, final path)], rows per shard)``; the caller renames them, the
    index (or single file) last. With ``SHARD_SIZE`` a shard whose rows are exactly the
    same rows of the same shard of the previous store, of the same dtype, is kept as it is
    (not rewritten, same inode and mtime): only shards whose content changes are written.

    Raises ValueError naming ``dataset``, STORE_DTYPE and the images when a finite pixel
    overflows the store's dtype (its temporary files removed; the chunk cache stays, so a
    rerun with float32 processes nothing again).
    """
    n = len(sources)
    chunks, index = sources["chunk"].to_numpy(), sources["index"].to_numpy(np.int64)
    handles: dict[str, h5py.File] = {}

    def source_file(chunk):
        if chunk not in handles:
            path = out_dir / IMAGES_FILE if chunk == "__previous__" else cache.root / f"{chunk}.h5"
            # a sharded previous store reads through its index (open_store: all shards there,
            # and file descriptors for all of them)
            handles[chunk] = image_store.open_store(path) if chunk == "__previous__" else h5py.File(path, "r")
        return handles[chunk][IMAGES_KEY]

    def copy_rows(dset: h5py.Dataset, begin: int, end: int) -> None:
        """Store rows ``begin … end-1`` into ``dset[0 : end-begin]``, a chunk at a time."""
        for b in range(begin, end, params.size_chunks):
            e = min(b + params.size_chunks, end)
            block = np.empty((e - b,) + shape, np.float32)
            for c in np.unique(chunks[b:e]):
                where = np.flatnonzero(chunks[b:e] == c)
                rows = index[b:e][where]
                order = np.argsort(rows)
                block[where[order]] = source_file(c)[rows[order]]
            block, overflow = image_store.to_store_dtype(block, params.store_dtype)
            if len(overflow):
                raise ValueError(_overflow_message(dataset, params.store_dtype,
                                                   sources.index.to_numpy()[b + overflow]))
            dset[b - begin:e - begin] = block

    store_tmp = out_dir / ".images.h5.tmp"
    written: list[tuple[Path, Path]] = []
    shard_rows: list[int] = []
    try:
        if params.shard_size and n:
            for leftover in out_dir.glob(".images-*.h5.tmp"):  # of a run killed while writing
                leftover.unlink()
            size = params.shard_size
            shard_rows = [min(size, n - begin) for begin in range(0, n, size)]
            previous = (image_store.shard_of_rows(out_dir / IMAGES_FILE, params.store_dtype)
                        if (chunks == "__previous__").any() else {})
            for k, begin in enumerate(range(0, n, size)):
                end, name = begin + shard_rows[k], image_store.shard_name(k)
                old = previous.get(begin)
                if (old is not None and old.rows == end - begin and old.path == out_dir / name
                        and old.key == IMAGES_KEY and old.path.is_file()
                        and (chunks[begin:end] == "__previous__").all()
                        and np.array_equal(index[begin:end], np.arange(begin, end))):
                    continue  # the same images in the same rows: keep the file
                tmp = out_dir / f".{name}.tmp"
                written.append((tmp, out_dir / name))
                with image_store.create_shard(tmp, end - begin, shape, filters, begin,
                                              params.store_dtype) as shard:
                    copy_rows(shard[IMAGES_KEY], begin, end)
            log.info("%s: %d shards of %d images, %d written, %d unchanged", out_dir.name,
                     len(shard_rows), size, len(written), len(shard_rows) - len(written))
            image_store.write_index(store_tmp, shard_rows, shape, filters, size, params.store_dtype)
        else:
            with h5py.File(store_tmp, "w") as out:
                dset = image_store.create_images(out, n, shape, filters, params.store_dtype)
                copy_rows(dset, 0, n)
    except ValueError:  # an overflowing pixel: leave no partial store behind
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        store_tmp.unlink(missing_ok=True)
        raise
    finally:
        for handle in handles.values():
            handle.close()
    written.append((store_tmp, out_dir / IMAGES_FILE))
    return written, shard_rows


def _overflow_message(dataset: str, dtype: str, files) -> str:
    """Why extract stops when pixels overflow ``dtype``, naming (some of) the ``files``."""
    shown = ", ".join(str(f) for f in files[:5]) + (", …" if len(files) > 5 else "")
    return (f"dataset {dataset}: images have finite pixels beyond the range of "
            f"extract.STORE_DTYPE {dtype} (|x| > {float(np.finfo(dtype).max):g}), which would be "
            f"stored as infinite; first found: {shown}. Set STORE_DTYPE to float32 (the "
            "processed images are kept in the cache: nothing is processed again)")


def _log_summary(report: dict) -> None:
    skipped = report["skipped_counts"]
    log.info("%s: found %d files, kept %d images of %d objects in %.1f s; skipped %d %s; "
             "%d names not matching, %d images without catalogue row, %d outside the selection, "
             "%d catalogue objects without image, %d objects with missing projections, "
             "%d crops fell back to the full frame",
             report["dataset"], report["images_found"], report["kept_images"], report["kept_objects"],
             report["seconds"], sum(skipped.values()), skipped or "", len(report["unmatched_names"]),
             len(report["images_without_catalogue_row"]), len(report["images_outside_selection"]),
             len(report["catalogue_objects_without_image"]), len(report["incomplete_projections"]),
             report["crop_failed"])
    if report.get("petrosian_failed"):
        log.warning("%s: the Petrosian fit failed on %d images (column petrosian_failure says "
                    "why): their magnitudes are summed over the whole frame and their radii are "
                    "NaN; their crops (at a fixed fraction of the frame) are unaffected",
                    report["dataset"], report["petrosian_failed"])
    outside = report.get("crop_outside", {})
    if outside.get("n"):
        log.info("%s: %.1f %% of crops reach beyond the frame (median %.3f, p90 %.3f, max %.3f of "
                 "the crop outside; padded with %s)", report["dataset"],
                 100 * outside["padded_fraction"], outside["median"], outside["p90"], outside["max"],
                 report.get("pad_mode", "?"))


# --------------------------------------------------------------------------- entry

def run(params: ExtractParams, raw_root: Path, illustris_root: Path, out_root: Path,
        snapshot_redshifts_path: Path) -> dict[str, dict]:
    reports = {}
    for spec in params.dataset_specs():
        if not spec.load:
            log.info("%s: LOAD is false; keeping what exists", spec.name)
            continue
        extractor = make_extractor(spec, params, raw_root, illustris_root, snapshot_redshifts_path)
        reports[spec.name] = extract_dataset(extractor, params, out_root)
    return reports


def main(argv=None) -> int:
    def body(params) -> int:
        reports = run(params.extract, config.dataset_raw_path, config.illustris_path,
                      config.dataset_path, config.snapshot_redshifts_path)
        empty = [name for name, r in reports.items() if r["kept_images"] == 0]
        if empty:
            log.error("no usable object in dataset(s) %s: see dataset/<DATASET>/extract_report.json "
                      "for every skipped file and its reason", empty)
            return 1
        return 0

    return run_stage("Extract stage: FITS + catalogues → image stores.", body, argv, log)


if __name__ == "__main__":
    sys.exit(main())
