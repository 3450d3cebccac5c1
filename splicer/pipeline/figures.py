"""What each figure target reads: tidy tables (by experiment) and example datasets (``<data>/<dataset>``)."""

from __future__ import annotations

from collections.abc import Mapping

from splicer.pipeline.paths import data_dir, embedding_manifest, manifest, table_paths

__all__ = ["DATASET_ROLES", "EMBEDDING_ROLES", "TABLE_ROLES", "figure_inputs", "figure_options"]

TABLE_ROLES = ("probes", "spectra", "correlations", "ceilings")
"""Input roles naming experiments: the figure reads their tidy table of that name."""
DATASET_ROLES = ("dataset", "datasets")
"""Input roles naming ``<datasets entry>/<dataset>`` folders (example-image figures)."""
EMBEDDING_ROLES = ("embeddings",)
"""Input roles naming embedding exports (config ``embeddings``): the figure reads their ``.h5ad`` files."""


def _data_ref(config: Mapping, ref: str, where: str) -> tuple[str, str]:
    data, sep, name = ref.partition("/")
    if not sep or data not in config["datasets"]:
        raise ValueError(
            f"config {where}: {ref!r} must be <datasets entry>/<dataset>; entries: {sorted(config['datasets'])}"
        )
    return data, name


def figure_inputs(config: Mapping, figure: str) -> tuple[list[str], dict[str, str | list[str]]]:
    """Files a figure rule depends on, and the ``inputs`` mapping (role -> path or paths) for the plot function.

    Table roles list experiments (their tidy CSVs); dataset roles name ``<datasets entry>/<dataset>`` folders,
    on which the rule depends through the folder's manifest.
    """
    spec = config["figures"][figure]
    files: list[str] = []
    roles: dict[str, str | list[str]] = {}
    for role in TABLE_ROLES:
        if role in spec:
            paths = [table_paths(config, e)[role] for e in spec[role]]
            files += paths
            roles[role] = paths
    for role in DATASET_ROLES:
        if role in spec:
            refs = [spec[role]] if role == "dataset" else list(spec[role])
            dirs = []
            for ref in refs:
                data, name = _data_ref(config, ref, f"figures.{figure}.{role}")
                files.append(manifest(config, data))
                dirs.append(f"{data_dir(config, data)}/{name}")
            roles[role] = dirs[0] if role == "dataset" else dirs
    for role in EMBEDDING_ROLES:
        if role in spec:
            for name in spec[role]:
                if name not in config.get("embeddings", {}):
                    raise ValueError(
                        f"config figures.{figure}.{role}: unknown embedding export {name!r}; defined: "
                        f"{sorted(config.get('embeddings', {}))}"
                    )
            paths = [embedding_manifest(config, name) for name in spec[role]]
            files += paths
            roles[role] = paths
    return sorted(set(files)), roles


def figure_options(config: Mapping, figure: str) -> dict:
    """Plot options of a figure (config ``figures.<name>.options``), with ``demo`` set for the scorecard."""
    options = dict(config["figures"][figure].get("options", {}))
    if figure == "scorecard":
        options.setdefault("demo", bool(config.get("demo", False)))
    return options
