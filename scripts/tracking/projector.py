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

We write the pbtxt ourselves (the same text ``tensorboard.plugins.projector`` would write)
so that writing needs no TensorFlow checkpoint and no TensorBoard import. The same
folder also works in the standalone projector (load tensors.tsv and metadata.tsv).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts.tracking.images import save_png, sprite

CONFIG_NAME = "projector_config.pbtxt"
SUBDIR = "projector"


@dataclass(frozen=True)
class EmbeddingFiles:
    """One embedding on disk; paths are relative to the folder of the projector config."""

    name: str
    tensor_path: str
    metadata_path: str
    sprite_path: str | None
    single_image_dim: tuple[int, int] | None  # (width, height) of one sprite cell, pixels
    shape: tuple[int, int]                    # (N embeddings, D dimensions)


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
                          name: str = "embedding") -> EmbeddingFiles:
    """Write tensors.tsv, metadata.tsv and (with thumbnails) sprite.png.

    Files go to ``<config_dir>/projector/<name>/``. ``vectors`` is N×D, ``metadata`` a
    DataFrame (or mapping of columns) with N rows, ``thumbnails`` N×H×W[×C] images.
    """
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

    sprite_rel, dims = None, None
    if thumbnails is not None:
        image, dims = sprite(np.asarray(thumbnails))
        save_png(image, folder / "sprite.png")
        sprite_rel = (rel / "sprite.png").as_posix()
    return EmbeddingFiles(
        name=key,
        tensor_path=(rel / "tensors.tsv").as_posix(),
        metadata_path=(rel / "metadata.tsv").as_posix(),
        sprite_path=sprite_rel,
        single_image_dim=dims,
        shape=(int(vec.shape[0]), int(vec.shape[1])),
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(embeddings: list[EmbeddingFiles]) -> str:
    """The ``ProjectorConfig`` in protobuf text format."""
    lines: list[str] = []
    for emb in embeddings:
        lines.append("embeddings {")
        lines.append(f"  tensor_name: {_quote(emb.name)}")
        lines.append(f"  tensor_path: {_quote(emb.tensor_path)}")
        lines.append(f"  metadata_path: {_quote(emb.metadata_path)}")
        if emb.sprite_path is not None and emb.single_image_dim is not None:
            lines.append("  sprite {")
            lines.append(f"    image_path: {_quote(emb.sprite_path)}")
            lines.append(f"    single_image_dim: {emb.single_image_dim[0]}")
            lines.append(f"    single_image_dim: {emb.single_image_dim[1]}")
            lines.append("  }")
        lines.append(f"  tensor_shape: {emb.shape[0]}")
        lines.append(f"  tensor_shape: {emb.shape[1]}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def write_projector_config(config_dir: str | Path, embeddings: list[EmbeddingFiles]) -> Path:
    """Write ``<config_dir>/projector_config.pbtxt`` listing ``embeddings``; returns its path."""
    path = Path(config_dir) / CONFIG_NAME
    tmp = path.with_suffix(".pbtxt.tmp")
    tmp.write_text(config_text(embeddings), encoding="utf-8")
    tmp.replace(path)  # atomic: a running TensorBoard never reads half a file
    return path
