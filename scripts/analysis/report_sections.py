"""The sections of the analyse report (``report.html`` / ``report.md``): the text that says
how each number was measured, and the tables and figures the steps produced, in reading
order.
"""
from __future__ import annotations

import pandas as pd

from scripts.analysis.baselines import FEATURE_SETS, WITH_Z
from scripts.analysis.interactive_map import INTERACTIVE_MAP
from scripts.analysis.report import Section
from scripts.params import Params

#: Rows of the analogue table shown in the report.
ANALOGUE_HEAD = 20


def _realism_text(splits) -> list[str]:
    on = ", ".join(splits)
    return [
        f"Measured on the {on} split(s) only. Every measure treats the images of one object "
        "(its projections, snapshots and root-descendant tree: prepare's split_group) as one "
        "unit, since they are not independent samples.",
        "Out-of-distribution score (Eisert et al. 2024): s_k(x) = d_k(x, B) / d_k(x, A∖group(x)) "
        "with L1 distances to the k-th neighbour, on representations standardised with the "
        "observed set. Both sets are cut to the same number of objects, and the neighbour sets "
        "hold one image per object, so that no sibling projection of x is its neighbour. "
        "Normalised by the 95th percentile of the same score between two halves of A split by "
        "object. 'sim in obs' = fraction of simulated images inside the observed distribution; "
        "'obs in sim' = fraction of observed images the simulation reproduces (both ≈ 0.95 for "
        "identical populations).",
        "C2ST: AUC of a logistic classifier telling the sets apart, cross-validated with folds "
        "that keep each object's images together (0.5 = indistinguishable). Interval and "
        "p-value from rerunning it with the set labels of whole objects shuffled "
        "(permutation null).",
        "MMD: squared maximum mean discrepancy (Gaussian kernel, median bandwidth) leaving out "
        "pairs of images of one object from the within-set sums; p-value from permutations of "
        "whole objects between the sets.",
    ]


def build_sections(params: Params, counts: pd.DataFrame, skipped: dict, dim: int, figures: dict,
                   realism: pd.DataFrame, drivers: pd.DataFrame, permanence: pd.DataFrame,
                   analogues: pd.DataFrame, analogue_metrics: dict, seconds: dict,
                   padding: dict | None = None, evaluation_subsample: dict | None = None) -> list[Section]:
    an = params.analyse
    sections = []
    summary = Section("Summary", [
        f"Run {an.run_name}: representation of dimension {dim}. Maps and analogues show the "
        f"{', '.join(an.splits)} split(s); every number below (realism, drivers, permanence) is "
        f"measured on the held-out {', '.join(an.evaluation_splits)} split(s) only."])
    if evaluation_subsample:
        summary.text.append(
            "Above analyse.EVALUATION_MAX_OBJECTS, those numbers use a seeded subsample of "
            "objects (every image of each): " + "; ".join(
                f"{name} {v['objects']} of {v['of']} objects ({v['images']} images)"
                for name, v in evaluation_subsample.items()) + ".")
    if len(realism):
        wanted = ["simulated", "observed", "in-domain (sim in obs)", "in-domain (obs in sim)",
                  "C2ST AUC", "MMD²", "MMD p", "note"]
        own = realism[realism["features"] == "representation"] if "features" in realism else realism
        summary.tables.append(("Realism of each simulated set against each observed set",
                               own[[c for c in wanted if c in own.columns]]))
    sm = drivers[drivers["field"] == "stellar_mass"] if len(drivers) else drivers
    if len(sm):
        columns = ["dataset", "r2_representation", "r2_representation_std", "r2_baseline",
                   "r2_baseline_std", *[f"r2_{f}" for f in FEATURE_SETS[1:]],
                   *[f"r2_{f}{WITH_Z}" for f in FEATURE_SETS], "n"]
        summary.tables.append(("Stellar mass from the representation vs the baselines "
                               "(cross-validated kNN R², ± spread over folds; +z: with the redshift)",
                               sm[[c for c in columns if c in sm.columns]]))
    if len(permanence):
        summary.tables.append(("Object permanence", permanence[[c for c in ("dataset", "top1", "top5",
                                                                            "chance_top5")
                                                                 if c in permanence.columns]]))
    sections.append(summary)
    data = Section("Data", tables=[("Images embedded per dataset and split", counts)])
    if padding:
        data.text.append("Crops that reach beyond their frame are padded with the image's own sky "
                         "noise (extract stage); the share of such crops per dataset shows whether "
                         "a set's borders differ from another's.")
        data.tables.append(("Fraction of each crop outside its frame (embedded images)", pd.DataFrame([
            {"dataset": name, "images": v["n"], "padded": v.get("padded_fraction"),
             "median": v.get("median"), "p90": v.get("p90"), "max": v.get("max")}
            for name, v in padding.items()])))
    if skipped:
        data.tables.append(("Datasets not embedded", pd.DataFrame(
            [{"dataset": k, "reason": v} for k, v in skipped.items()])))
    data.tables.append(("Stage timings [s]", pd.DataFrame(list(seconds.items()), columns=["step", "seconds"])))
    sections.append(data)
    maps = Section("Maps", [f"UMAP (n_neighbors {an.umap.n_neighbors}, min_dist {an.umap.min_dist}, "
                            f"fitted on at most {an.umap.fit_subsample} images, the rest transformed) "
                            "and PCA of the standardised representation."],
                   links=[("Interactive map: hover a point for its thumbnail (opens from disk; "
                           "python -m scripts.explore serves the full explorer)", INTERACTIVE_MAP)])
    for key, caption in (("umap_datasets", "UMAP by dataset"), ("umap_contours", "UMAP density contours: "
                         "simulated (lines) vs observed (grey)"), ("umap_thumbnails", "UMAP thumbnail map"),
                         ("umap_fields", "UMAP coloured by FIELD"), ("pca_datasets", "PCA by dataset"),
                         ("pca_contours", "PCA density contours"), ("pca_fields", "PCA coloured by FIELD")):
        if key in figures:
            maps.figures.append((caption, figures[key]))
    sections.append(maps)
    if len(realism):
        sec = Section("Realism", _realism_text(an.evaluation_splits) + [
            "Each measure is also computed on the baseline feature sets (column 'features': "
            "pixels = PCA of binned pixels fitted on all compared sets pooled, photometry = the "
            "extract stage's magnitudes, colours, R50, R90 and concentration, and the "
            "representation beside the photometry), to show what the network sees that "
            "standard measurements do not."], tables=[("All realism measures", realism)])
        sec.figures += [(f"{k[len('realism_'):].replace('_', ' ')}: OOD scores and MMD null", v)
                        for k, v in figures.items() if k.startswith("realism_")]
        sections.append(sec)
    if len(drivers):
        sec = Section("Physical drivers", [
            f"On the {', '.join(an.evaluation_splits)} split(s): cross-validated ({an.cv_folds}-fold, "
            "all images of one object in one fold; ± is the spread over folds) R² of a "
            f"{an.knn_k}-nearest-neighbour regression of each FIELD, from the representation and "
            "from honest baselines: 'baseline' = PCA of 4×4-binned pixels (per dataset) + "
            "image-sum magnitudes, r50, concentration and colours; 'pixels' = PCA of binned pixels "
            "fitted on all datasets pooled; 'photometry' = the extract stage's magnitudes, "
            "colours, Petrosian R50/R90 and concentration; 'representation+photometry' = both "
            "side by side, each block given the same total weight in the distances (does the "
            "network add information beyond standard measurements?). "
            f"For distance-dependent FIELDS ({', '.join(an.distance_fields)}) every set is also "
            "scored with the redshift added (+z, a block of its own), as with spectroscopic "
            "redshifts."],
            tables=[("R² per dataset and FIELD", drivers)])
        sec.figures += [(f"{k.replace('_', ' ')}", v) for k, v in figures.items()
                        if k.startswith("drivers_")]
        sections.append(sec)
    if len(permanence):
        sections.append(Section("Object permanence", [
            f"On the {', '.join(an.evaluation_splits)} split(s): fraction of images whose nearest "
            "(top-1) or any of whose 5 nearest (top-5) "
            "neighbours is another projection of the same galaxy, with the chance level for "
            "the same group sizes."], tables=[("Object permanence", permanence)]))
    if len(analogues):
        shares = pd.DataFrame([{"observed": o, "simulated": s, "share of analogues": v}
                               for o, m in analogue_metrics.items() for s, v in m["share"].items()])
        sec = Section("Analogues", [f"The {an.n_analogues} nearest simulated images of every observed "
                                    "image (L2 on representations standardised with the observed set); "
                                    "full table in analogues.parquet."],
                      tables=[("Share of analogues per simulated set", shares),
                              (f"First {ANALOGUE_HEAD} rows of analogues.parquet",
                               analogues.head(ANALOGUE_HEAD))])
        sec.figures += [(k.replace("_", " "), v) for k, v in figures.items() if k.startswith("analogues_")]
        sections.append(sec)
    return sections
