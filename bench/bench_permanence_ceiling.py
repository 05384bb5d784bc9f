"""Benchmark: how high can object permanence go on the mock universe? (issue 11)

Object permanence asks that another projection of the same galaxy be the nearest
neighbour among all test images. The mock's galaxies are smooth Sérsic bulges and disks:
what ties the projections of one galaxy together is a handful of continuous numbers
(brightness and colours per band, size, profile), and the projections differ in
inclination, dust, PSF, neighbours and noise. This bench measures top-1/top-5 with the
analyse stage's own code (:func:`scripts.analysis.permanence.object_permanence`,
standardised features, projections at one snapshot as one object) for features an
oracle or an astronomer would have:

* the mock's **true** g, r, i magnitudes of each image (dust per projection included),
  exactly and with Gaussian measurement errors of 0.01–0.1 mag;
* the true magnitudes plus the true half-light radius on the sky (an intrinsic size);
* extract's measured Petrosian magnitudes, alone and with its Petrosian R50/R90 (the
  photometry baseline of analyse, without the concentration);
* the crop's edge in frame pixels, alone and with those magnitudes: how much identity the
  framing carries (with ``CROPPERS: fraction`` the frame's size, which the archive and the
  mock set from the simulated galaxy's size, the same for all its projections);
* with ``--run models/<run>``, what a trained model holds: its representation (the row
  analyse reports), that representation averaged over the 8 rotations and flips of the
  pixel grid (exactly invariant to them, as the training augmentations ask), and the
  projection head's output (the space the contrastive loss makes alike for the projections
  of one galaxy), restored from the run's last checkpoint.

It needs an extracted and prepared mock (``make demo``) and its ``truth.parquet``:

    python -m bench.bench_permanence_ceiling                 # MOCK_FIDUCIAL, test split
    python -m bench.bench_permanence_ceiling --dataset MOCK_COMPACT --split train
    python -m bench.bench_permanence_ceiling --run models/demo   # and the trained model's spaces

Paths come from ``config`` (``DATASET_PATH``, ``DATASET_RAW_PATH`` in the environment).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

import config
from scripts.analysis.permanence import object_permanence

NOISE_MAG = (0.01, 0.02, 0.05, 0.1)


def load(dataset_root: Path, raw_root: Path, dataset: str, split: str) -> pd.DataFrame:
    """Measured and true quantities of every image of ``dataset`` in ``split``."""
    splits = pd.read_parquet(dataset_root / "splits.parquet", columns=["dataset", "row", "split"])
    objects = pd.read_parquet(dataset_root / dataset / "objects.parquet")
    truth = pd.read_parquet(raw_root / dataset / "truth.parquet")
    rows = splits[(splits["dataset"] == dataset) & (splits["split"] == split)]
    table = objects.merge(rows[["row"]], on="row").merge(
        truth[["file", "g_mag", "r_mag", "i_mag", "half_light_radius_arcsec"]], on="file",
        how="left", validate="one_to_one")
    if table["r_mag"].isna().any():
        raise ValueError(f"{raw_root / dataset / 'truth.parquet'}: no true row for "
                         f"{int(table['r_mag'].isna().sum())} image(s) of {dataset}")
    return table


def feature_sets(table: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_mags = table[["g_mag", "r_mag", "i_mag"]].to_numpy(np.float64)
    sets = {"true magnitudes": true_mags}
    for sigma in NOISE_MAG:
        sets[f"true magnitudes ± {sigma} mag"] = true_mags + rng.normal(0.0, sigma, true_mags.shape)
    sets["true magnitudes + true half-light radius"] = np.column_stack(
        [true_mags, np.log10(table["half_light_radius_arcsec"].to_numpy(np.float64))])
    measured = table[["mag_G", "mag_R", "mag_I"]].to_numpy(np.float64)
    sets["measured magnitudes"] = measured
    with np.errstate(divide="ignore", invalid="ignore"):
        radii = np.log10(table[["petro_r50_arcsec", "petro_r90_arcsec"]].to_numpy(np.float64))
    sets["measured magnitudes + Petrosian R50, R90"] = np.column_stack([measured, radii])
    # the framing: the crop's edge in frame pixels. The Petrosian crop takes it from each
    # image's light (4 R90); a fixed-fraction crop from the frame, which the archive (and the
    # mock) sets from the simulated galaxy's size, alike for all its projections. The
    # projections sit in adjacent rows, so ties of the whole-pixel edge are broken at random
    # (a jitter below one pixel), not by row order, which would favour hits
    edge = table[["crop_size"]].to_numpy(np.float64)
    crop = np.log10(edge + rng.uniform(-0.25, 0.25, edge.shape))
    sets["crop edge [px]"] = crop
    sets["measured magnitudes + crop edge"] = np.column_stack([measured, crop])
    return sets


def dihedral_mean(forward, images) -> np.ndarray:
    """Mean of ``forward`` over the 8 rotations by 90° and flips of ``images`` (N, H, W, C):
    exactly invariant to them (no interpolation on a square grid)."""
    views = [np.rot90(flipped, k, axes=(1, 2)) for flipped in (images, images[:, :, ::-1])
             for k in range(4)]
    return np.mean([np.asarray(forward(np.ascontiguousarray(v))) for v in views], axis=0)


def model_feature_sets(run_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The spaces of the trained run ``run_dir`` for raw ``images`` (see the module docstring)."""
    import tensorflow as tf
    import yaml

    from scripts.model.build import build_model
    from scripts.model.inference import embed, load_encoder
    from scripts.params import parse_params

    trained = load_encoder(run_dir)
    sets = {"representation": embed(trained, images),
            "representation, mean over 8 rotations/flips":
                dihedral_mean(lambda batch: embed(trained, batch), images)}
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no checkpoint: the projection "
                                "head is kept only there")
    params = parse_params(yaml.safe_load((run_dir / "params_used.yaml").read_text()))
    model = build_model(params.train, trained.input_shape)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    hidden = embed(model.encoder, images, normalisation=trained.normalisation)
    step = latest.rsplit("-", 1)[-1]
    sets[f"checkpoint {step}: representation"] = hidden
    sets[f"checkpoint {step}: projection head"] = np.asarray(model.head(hidden, training=False))
    return sets


def measure(table: pd.DataFrame, seed: int, extra: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Permanence of each feature set (and of ``extra`` ones, row-aligned with ``table``)."""
    groups = (table["snapshot"].astype(str) + ":" + table["object_id"].astype(str)).to_numpy()
    out = []
    for name, X in {**feature_sets(table, seed), **(extra or {})}.items():
        ok = np.isfinite(X).all(axis=1)
        sd = X[ok].std(axis=0)
        Z = (X[ok] - X[ok].mean(axis=0)) / np.where(sd > 0, sd, 1.0)   # a constant column adds nothing
        result = object_permanence(Z, groups[ok], ks=(1, 5), seed=seed)
        out.append({"features": name, "images": int(ok.sum()), "top1": result["top1"],
                    "top5": result["top5"], "chance_top1": result["chance_top1"]})
    return pd.DataFrame(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="MOCK_FIDUCIAL")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", type=Path, help="a trained run folder (models/<run>): add its spaces")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    dataset_root = Path(config.dataset_path)
    table = load(dataset_root, Path(config.dataset_raw_path), ns.dataset, ns.split)
    extra = None
    if ns.run is not None:
        from scripts.analysis.representation import store_path
        from scripts.model.input_pipeline import HDF5Images
        reader = HDF5Images({ns.dataset: store_path(dataset_root, ns.dataset)})
        rows = table["row"].to_numpy()
        images = reader.read(np.zeros(len(rows), np.int64), rows)   # only the split's rows
        reader.close()
        extra = model_feature_sets(ns.run, images)
    result = measure(table, ns.seed, extra)
    print(f"object permanence on {ns.dataset}, {ns.split} split ({len(table)} images, "
          f"{table.groupby(['snapshot', 'object_id']).ngroups} objects)")
    print(result.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
