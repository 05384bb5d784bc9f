"""The notebooks in notebooks/ run against a real run folder of the small mock universe,
take their run through a cell tagged ``parameters`` (papermill's convention), and are
stored without outputs."""
from __future__ import annotations

import copy
import shutil

import nbformat
import pytest
import yaml

from scripts.params import parse_params
from tests.conftest import ROOT
from bench.aperture_encoder import save_run

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUN = "nb"

# Per notebook: parameters beyond the run's paths. The run is analysed with realism
# settings the small universe can meet (every split held out, small k, two folds), so the
# realism notebook runs on the params file's own settings and must find metrics.json's numbers.
OVERRIDES = {
    "compare_realism.ipynb": {},
    "explore_run.ipynb": {"FIELD": "stellar_mass"},
    "posterior_observed.ipynb": {},
}
SMALL_REALISM = {"K": 3, "CV_FOLDS": 2, "N_PERMUTATIONS": 20, "C2ST_PERMUTATIONS": 5}


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= set(OVERRIDES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear them "
                       "(Jupyter: Edit > Clear Outputs of All Cells, or "
                       "jupyter nbconvert --clear-output --inplace) before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"


def inject_parameters(nb, values: dict):
    """Insert a cell assigning ``values`` right after the ``parameters`` cell, as papermill
    does (tagged ``injected-parameters``)."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


@pytest.fixture(scope="module")
def analysed_run(prepared_small, tmp_path_factory):
    """A run folder written by the analyse stage for a fixed encoder on the small universe,
    with the params file it was analysed with: (params path, report dir, dataset dir)."""
    from scripts import analyse, infer

    source, raw = prepared_small
    root = tmp_path_factory.mktemp("notebook_run")
    dataset_root = root / "dataset"
    shutil.copytree(source, dataset_root)
    raw = copy.deepcopy(raw)
    raw["train"]["RUN_NAME"] = RUN
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    raw["analyse"]["EVALUATION_SPLITS"] = ["train", "validation", "test"]
    raw["analyse"]["REALISM"].update(SMALL_REALISM)
    raw["tracking"]["BACKENDS"] = ["none"]
    raw["infer"].update(EPOCHS=5, PATIENCE=5, NUM_SAMPLES=50, CHECKPOINT_EVERY=5,  # a quick flow,
                        RECALIBRATION="none")   # one: the notebooks read its samples only
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    save_run(root / "models" / RUN, 32, 3)
    params = parse_params(raw)
    analyse.run(params, dataset_root, root / "models", root / "reports")
    infer.run(params, dataset_root, root / "models", root / "reports")   # for the posterior notebook
    return params_path, root / "reports" / RUN, dataset_root


@pytest.fixture(scope="module")
def executed(analysed_run):
    """Every notebook executed (nbclient) on the analysed run: {name: notebook or the
    exception its execution raised}."""
    from nbclient import NotebookClient

    params_path, report_dir, dataset_dir = analysed_run
    out = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        inject_parameters(nb, {"PARAMS_FILE": str(params_path), "REPORT_DIR": str(report_dir),
                               "DATASET_DIR": str(dataset_dir), **OVERRIDES.get(path.name, {})})
        try:   # raises CellExecutionError (the cell and its traceback) when a cell raises
            NotebookClient(nb, timeout=180, kernel_name="python3",
                           resources={"metadata": {"path": str(ROOT)}}).execute()
            out[path.name] = nb
        except Exception as err:  # noqa: BLE001 - reported by the test of that notebook
            out[path.name] = err
    return out


def outputs(nb, output_type=None):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if output_type is None or o.output_type == output_type]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_run_folder(path, executed):
    nb = executed[path.name]
    if isinstance(nb, Exception):
        raise nb
    assert not outputs(nb, "error")
    assert any("image/png" in o.data for o in outputs(nb, "display_data")), "no figure drawn"


def test_realism_notebook_finds_the_numbers_of_metrics_json(executed):
    """Run on the params file's settings, the notebook's compare_sets table equals the one
    it builds from metrics.json: it measures realism exactly as the report does."""
    nb = executed["compare_realism.ipynb"]
    if isinstance(nb, Exception):
        raise nb

    def table_of(marker):
        cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
        return next(o.data["text/plain"] for o in cell.outputs if o.output_type == "execute_result")

    recomputed, stored = table_of("summary.loc["), table_of("pd.DataFrame(stored")
    assert "NaN" not in stored and "classifier AUC" in stored
    assert recomputed == stored
