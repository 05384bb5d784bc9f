"""Files read by TensorBoard's Embedding Projector (no checkpoint needed).

The projector plugin looks for ``projector_config.pbtxt`` in each TensorBoard run folder
(a folder holding event files) and in the log root. Each ``embeddings { ... }`` entry of
that text-format ``ProjectorConfig`` proto can point, by paths relative to the config's
folder (the plugin refuses paths outside it), at:

- ``tensor_path``: the vectors as TSV, one row per embedding, no header;
- ``metadata_path``: TSV with a header row of column names then one row per embedding
  (the plugin only treats the first line as a header when it has ≥ 2 columns, so a
  single column gets an ``index`` column in front);
- ``sprite``: one PNG of the thumbnails tiled row-major on a square, with
  ``single_image_dim`` = cell width, cell height.

The config itself is TensorBoard's own ``ProjectorConfig`` proto, written by
``tensorboard.plugins.projector.visualize_embeddings`` (no checkpoint needed); the same
folder also works in the standalone projector (load tensors.tsv and metadata.tsv).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scripts.tracking.images import save_png, sprite

if TYPE_CHECKING:
    from tensorboard.plugins.projector import EmbeddingInfo

SUBDIR = "projector"


def safe_name(name: str) -> str:
    """A name usable as a folder and a proto string: [A-Za-z0-9_.-], others → ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return cleaned or "embedding"


def _cell(value) -> str:
    """One metadata cell: missing → empty, tabs/newlines (TSV separators) → spaces."""
    if value is None:
        return ""
    if isinstance(value, float) and not np.isfinite(value):
        return ""
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return re.sub(r"[\t\r\n]+", " ", str(value))


def _metadata_table(metadata, n: int) -> tuple[list[str], list[list[str]]]:
    """(header, rows) from a DataFrame / mapping of columns / None, with ≥ 2 columns."""
    import pandas as pd

    if metadata is None:
        df = pd.DataFrame(index=range(n))
    elif isinstance(metadata, pd.DataFrame):
        df = metadata.reset_index(drop=True)
    else:
        df = pd.DataFrame(metadata).reset_index(drop=True)
    if len(df.columns) < 2:
        df = df.copy()
        df.insert(0, "index" if "index" not in df.columns else "row_index", np.arange(n))
    header = [_cell(c) for c in df.columns]
    rows = [[_cell(v) for v in row] for row in df.itertuples(index=False, name=None)]
    return header, rows


def write_embedding_files(config_dir: str | Path, vectors: np.ndarray, metadata=None,
                          thumbnails: np.ndarray | None = None,
                          name: str = "embedding") -> "EmbeddingInfo":
    """Write tensors.tsv, metadata.tsv and (with thumbnails) sprite.png; returns their
    ``EmbeddingInfo`` entry (paths relative to ``config_dir``, ``tensor_name`` the
    :func:`safe_name` of ``name``).

    Files go to ``<config_dir>/projector/<name>/``. ``vectors`` is N×D, ``metadata`` a
    DataFrame (or mapping of columns) with N rows, ``thumbnails`` N×H×W[×C] images.
    """
    from tensorboard.plugins.projector import EmbeddingInfo

    vec = np.asarray(vectors, dtype=np.float32)
    n = vec.shape[0]
    key = safe_name(name)
    rel = Path(SUBDIR) / key
    folder = Path(config_dir) / rel
    folder.mkdir(parents=True, exist_ok=True)

    np.savetxt(folder / "tensors.tsv", vec, fmt="%.7g", delimiter="\t")
    header, rows = _metadata_table(metadata, n)
    with open(folder / "metadata.tsv", "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(header) + "\n")
        for row in rows:
            fh.write("\t".join(row) + "\n")

    info = EmbeddingInfo(tensor_name=key, tensor_path=(rel / "tensors.tsv").as_posix(),
                         metadata_path=(rel / "metadata.tsv").as_posix(),
                         tensor_shape=[int(vec.shape[0]), int(vec.shape[1])])
    if thumbnails is not None:
        image, dims = sprite(np.asarray(thumbnails))
        save_png(image, folder / "sprite.png")
        info.sprite.image_path = (rel / "sprite.png").as_posix()
        info.sprite.single_image_dim.extend(dims)
    return info


def write_projector_config(config_dir: str | Path, embeddings: list["EmbeddingInfo"]) -> None:
    """Write ``<config_dir>/projector_config.pbtxt`` listing ``embeddings`` (TensorBoard's
    ``visualize_embeddings``)."""
    from tensorboard.plugins.projector import ProjectorConfig, visualize_embeddings

    config = ProjectorConfig()
    config.embeddings.extend(embeddings)
    visualize_embeddings(str(config_dir), config)
