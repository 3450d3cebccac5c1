"""UMAP of the per-cell SpliCER embedding beside one of the marker means, from embedding exports (.h5ad).

Input role ``embeddings``: the ``manifest.json`` of one or more exports (:mod:`splicer.export`). Per export the
figure has two columns -- the UMAP of ``obsm["X_splicer"]`` and the UMAP of the standardised log1p marker means of
the crop channels (what a scimap/scanpy user would cluster without SpliCER) -- and one row per colouring: the cell
type (the label column, when the cells are labelled; otherwise the sample), then a few markers (log1p mean,
clipped to its 1st-99th percentile). Both UMAPs are scanpy's (``pp.neighbors`` with ``use_rep``, ``tl.umap``)
with the same neighbours, seed and cells (at most ``max_cells``, a seeded random subset). With labels, each
panel's title gives the kNN label agreement: the mean fraction of a cell's neighbours that share its label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from splicer.plots.common import Inputs, Outputs, hue_palette, input_paths, new_figure, save_figure, titled

__all__ = ["fig_umap"]


def _load(manifest: Any, max_cells: int, seed: int) -> Any:
    """All samples of one export as one AnnData (a seeded subset of at most ``max_cells`` cells)."""
    import anndata as ad

    from splicer.export import h5ad_files

    parts = [ad.read_h5ad(p) for p in h5ad_files(manifest)]
    if not parts:
        raise ValueError(f"umap: export {manifest} holds no .h5ad file")
    adata = (
        ad.concat(parts, join="inner", merge="first", uns_merge="first", index_unique="-")
        if len(parts) > 1
        else parts[0]
    )
    if adata.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, size=max_cells, replace=False))
        adata = adata[keep].copy()  # a view copied once
    return adata


def _umap(adata: Any, rep: np.ndarray, n_neighbors: int, seed: int) -> tuple[np.ndarray, Any]:
    """UMAP coordinates and the kNN distance graph of representation ``rep`` (scanpy)."""
    import anndata as ad
    import scanpy as sc

    work = ad.AnnData(np.zeros((adata.n_obs, 1), np.float32), obs=pd.DataFrame(index=adata.obs_names))
    work.obsm["rep"] = np.asarray(rep, np.float32)
    sc.pp.neighbors(work, use_rep="rep", n_neighbors=min(n_neighbors, adata.n_obs - 1), random_state=seed)
    sc.tl.umap(work, random_state=seed)
    return work.obsm["X_umap"], work.obsp["distances"]


def _agreement(distances: Any, labels: pd.Series) -> float:
    """Mean fraction of each labelled cell's neighbours (kNN graph) with the same label."""
    codes = labels.cat.codes.to_numpy()
    graph = distances.tocsr()
    fractions = []
    for i in np.flatnonzero(codes >= 0):
        nbrs = graph.indices[graph.indptr[i] : graph.indptr[i + 1]]
        nbrs = nbrs[codes[nbrs] >= 0]
        if nbrs.size:
            fractions.append(np.mean(codes[nbrs] == codes[i]))
    return float(np.mean(fractions)) if fractions else float("nan")


def _means(adata: Any, markers: Sequence[str]) -> np.ndarray:
    """The marker means (``X`` columns) of ``markers``, float64 (no AnnData view)."""
    names = list(adata.var_names)
    return np.asarray(adata.X, np.float64)[:, [names.index(m) for m in markers]]


def _pick_markers(adata: Any, markers: Sequence[str] | None, n: int) -> list[str]:
    channels = [m for m, c in zip(adata.var_names, adata.var["crop_channel"], strict=True) if c]
    if markers is not None:
        if unknown := [m for m in markers if m not in adata.var_names]:
            raise ValueError(f"umap: markers {unknown} are not among the exported markers {list(adata.var_names)}")
        return list(markers)
    spread = np.log1p(np.clip(_means(adata, channels), 0, None)).std(axis=0)
    return [channels[i] for i in np.argsort(-spread)[:n]]


def fig_umap(
    inputs: Inputs,
    outputs: Outputs,
    title_suffix: str = "",
    markers: Sequence[str] | None = None,
    n_markers: int = 3,
    max_cells: int = 20_000,
    n_neighbors: int = 15,
    seed: int = 0,
) -> None:
    """Draw the UMAP figure (module docstring). ``markers``: marker colourings (default: the ``n_markers`` crop
    channels whose log1p means vary most)."""
    manifests = input_paths(inputs, "embeddings", "umap")
    blocks = []
    for manifest in manifests:
        adata = _load(manifest, max_cells, seed)
        key = adata.uns.get("splicer", {}).get("label_key") or ""
        colour = key if key and key in adata.obs and adata.obs[key].notna().any() else "sample"
        channels = [m for m, c in zip(adata.var_names, adata.var["crop_channel"], strict=True) if c]
        means = np.log1p(np.clip(_means(adata, channels), 0, None))
        means = (means - means.mean(0)) / np.maximum(means.std(0), 1e-9)
        reps = {"SpliCER embedding": adata.obsm["X_splicer"], "marker means": means}
        maps = {name: _umap(adata, rep, n_neighbors, seed) for name, rep in reps.items()}
        blocks.append((manifest.parent.name, adata, colour, _pick_markers(adata, markers, n_markers), maps))
    rows = 1 + max(len(b[3]) for b in blocks)
    cols = 2 * len(blocks)
    fig = new_figure(3.4 * cols + 1.6, 3.1 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    size = float(np.clip(4000 / max(b[1].n_obs for b in blocks), 0.5, 12))
    for b, (name, adata, colour, chosen, maps) in enumerate(blocks):
        labels = adata.obs[colour].astype("category")
        palette = hue_palette([str(c) for c in labels.cat.categories])
        for j, (rep, (xy, distances)) in enumerate(maps.items()):
            col = 2 * b + j
            ax = axes[0, col]
            for cat in labels.cat.categories:
                pick = (labels == cat).to_numpy()
                ax.scatter(xy[pick, 0], xy[pick, 1], s=size, color=palette[str(cat)], label=str(cat), linewidths=0)
            unlabelled = labels.isna().to_numpy()
            if unlabelled.any():
                ax.scatter(xy[unlabelled, 0], xy[unlabelled, 1], s=size, color="0.8", label="unlabelled", linewidths=0)
            agree = f"\nkNN {colour} agreement {_agreement(distances, labels):.2f}" if colour != "sample" else ""
            ax.set_title(f"{name}: {rep}\n{adata.n_obs} cells, by {colour}{agree}", fontsize=9)
            if col == cols - 1:
                ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, markerscale=max(6 / size, 1))
            for r, marker in enumerate(chosen, start=1):
                ax = axes[r, col]
                value = np.log1p(np.clip(_means(adata, [marker])[:, 0], 0, None))
                lo, hi = np.percentile(value, [1, 99])
                art = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=np.clip(value, lo, hi), cmap="viridis", linewidths=0)
                ax.set_title(f"{rep}: {marker}", fontsize=9)
                if col == cols - 1:
                    fig.colorbar(art, ax=ax, fraction=0.046, pad=0.02, label="log1p mean")
        for r in range(1 + len(chosen), rows):
            for j in range(2):
                axes[r, 2 * b + j].set_visible(False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1", fontsize=8)
        ax.set_ylabel("UMAP 2", fontsize=8)
    fig.suptitle(titled("Cells by their SpliCER embedding and by their marker means", title_suffix), fontsize=11)
    fig.tight_layout()
    save_figure(fig, outputs, "umap")
