"""Checks of a pipeline config that the JSON schema cannot express, run before any job (``snakemake -n``).

Every error is a ``ValueError`` starting ``config <key path>:`` and naming the value at fault and what would be
accepted. Names (methods, losses, dataset kinds, figures) come from :mod:`splicer.registry`; what each
``datasets`` entry builds (dataset names, channels, masks, image sizes) from its kind's declared
:class:`~splicer.registry.Layout`, with the masks its ``segment`` section gives. Against those, every experiment's
pretraining dataset, components (types, keys, channel and mask names, regions inside the image), evaluation and
supervised datasets (names, channel counts) and every figure's datasets are checked. What a layout leaves
unknown (``None``: a ``folder`` entry without ``channel_names``, say) is checked by the build and the jobs.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from splicer.pipeline.archives import archive_of, archive_options, archive_targets
from splicer.pipeline.figures import DATASET_ROLES, EMBEDDING_ROLES, TABLE_ROLES, figure_inputs
from splicer.pipeline.grid import Run, embedding_run, run_config
from splicer.pipeline.paths import split_ref
from splicer.registry import FIGURES, KINDS, LOSSES, METHODS, Layout, resolve

__all__ = ["check_config", "dataset_names", "entry_layouts", "segment_job_problems", "segmented_masks"]

_UNKNOWN = Layout(None, None, None)

# Masks each segmenter writes (splicer/segment.py, splicer/segmenters.py); hybridgnet's are its options.masks.
_SEGMENTER_MASKS: dict[str, tuple[str, ...]] = {
    "classical_nuclei": ("nuclei",),
    "classical_lungs": ("lungs",),
    "hovernet": ("nuclei",),
}


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"config {where}: {message}")


def _suggest(name: Any, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def dataset_names(spec: Mapping) -> tuple[str, ...]:
    """The dataset folders a ``datasets`` entry's build writes (declared, not built)."""
    kind = spec["kind"]
    if kind == "demo":
        from splicer.data.demo import demo_datasets

        return demo_datasets(spec.get("family", ""))
    from splicer.data.real import dataset_names as real_dataset_names

    return real_dataset_names(kind, spec.get("params", {}))


def segmented_masks(segment: Mapping) -> tuple[tuple[str, ...] | None, str]:
    """The masks a ``segment`` section gives its datasets (``None``: those the build stored, for ``truth``) and a
    description for messages. With a ``fallback``, only masks both segmenters write are counted on."""
    from splicer.segment import OPTION_DEFAULTS, parse_spec

    spec = parse_spec(segment)

    def masks(name: str) -> tuple[str, ...] | None:
        if name == "hybridgnet":
            return tuple(spec.options.get("masks") or OPTION_DEFAULTS["hybridgnet"]["masks"])
        return _SEGMENTER_MASKS.get(name)

    primary = masks(spec.segmenter)
    if spec.fallback is None or primary is None:
        return primary, f"segmenter {spec.segmenter!r}"
    other = masks(spec.fallback) or ()
    both = tuple(m for m in primary if m in other)
    return both, f"segmenter {spec.segmenter!r} {list(primary)}, fallback {spec.fallback!r} {list(other)}"


def entry_layouts(spec: Mapping) -> dict[str, Layout]:
    """What every dataset of a ``datasets`` entry will hold (its kind's declared layout, the masks replaced by
    those of its ``segment`` section); unknown parts are ``None``."""
    kind = KINDS[spec["kind"]]
    declared = resolve(kind.layout)(spec) if kind.layout else {}
    out = {name: declared.get(name, _UNKNOWN) for name in dataset_names(spec)}
    if spec.get("segment"):
        masks, _ = segmented_masks(spec["segment"])
        if masks is not None:
            out = {name: Layout(lay.channels, masks, lay.size) for name, lay in out.items()}
    return out


def _check_demo(where: str, spec: Mapping) -> None:
    from splicer.data.demo import DEMO_FAMILIES
    from splicer.data.demo.common import check_params

    family = spec.get("family")
    if family not in DEMO_FAMILIES:
        raise _fail(
            f"{where}.family",
            f"unknown demo family {family!r}{_suggest(family, DEMO_FAMILIES)}; families: {sorted(DEMO_FAMILIES)}",
        )
    signature = inspect.signature(DEMO_FAMILIES[family]).parameters
    allowed = [p for p in signature if p not in ("out_dir", "seed")]
    params = spec.get("params", {})
    if unknown := sorted(set(params) - set(allowed)):
        hint = "".join(_suggest(u, allowed) for u in unknown)
        raise _fail(
            f"{where}.params", f"unknown parameter(s) {unknown}{hint} for demo family {family!r}; allowed: {allowed}"
        )
    counts = {k: v for k, v in params.items() if isinstance(signature[k].default, int)}
    try:  # the generators' own check of their integer params (sizes >= 8, counts >= 1)
        check_params(spec.get("seed", 0), **counts)
    except ValueError as err:
        raise _fail(f"{where}.params", str(err)) from None
    for key, value in params.items():
        if isinstance(signature[key].default, float) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise _fail(f"{where}.params", f"parameter {key!r} must be a number, got {value!r}")


def _check_caps(spec: Mapping, caps: Any) -> None:
    """Every caps key names ``*`` or a dataset (and split) the entry's builder writes."""
    names = dataset_names(spec)
    for key in caps.limits:
        dataset, _, split = key.partition("/")
        if key != "*" and dataset not in names:
            raise ValueError(f"caps key {key!r}: kind {spec['kind']!r} writes datasets {list(names)}")
        if split and split not in ("train", "val", "test"):
            raise ValueError(f"caps key {key!r}: split must be train, val or test")


def _check_dataset_entry(where: str, spec: Mapping) -> None:
    """A dataset entry's kind and segment section, and a real entry's source options, builder params and caps."""
    if spec["kind"] not in KINDS:
        raise _fail(f"{where}.kind", f"unknown dataset kind {spec['kind']!r}; kinds: {list(KINDS)}")
    if "segment" in spec:
        from splicer.segment import parse_spec

        try:
            parse_spec(spec["segment"])
        except ValueError as err:
            raise _fail(f"{where}.segment", str(err)) from None
    if spec["kind"] == "demo":
        _check_demo(where, spec)
        return
    if "family" in spec:
        raise _fail(f"{where}.family", f"only demo entries have a family (this entry's kind is {spec['kind']!r})")
    from splicer.data.real import param_defaults
    from splicer.data.real.common import Caps, check_params
    from splicer.data.sources import archives

    for key, check in (
        ("source", lambda: archives(spec["kind"], **spec.get("source", {}))),
        ("params", lambda: check_params(spec["kind"], spec.get("params", {}), param_defaults(spec["kind"]))),
        ("caps", lambda: _check_caps(spec, Caps.from_spec(spec))),
    ):
        try:
            check()
        except (ValueError, TypeError, ImportError) as err:
            raise _fail(f"{where}.{key}", str(err)) from None


def _check_losses(where: str, losses: Any) -> None:
    for loss in losses or ():
        if loss not in LOSSES:
            raise _fail(where, f"unknown loss {loss!r}; losses: {list(LOSSES)}")


def _dataset(config: Mapping, layouts: Mapping, ename: str, ref: str, where: str) -> tuple[str, Layout]:
    """``<dataset>`` or ``<entry>/<dataset>`` of an experiment -> (``entry/dataset``, its layout); an error naming
    ``where`` when the entry does not build it."""
    data, name = split_ref(config, ename, ref)
    if data not in layouts:
        raise _fail(where, f"unknown dataset {data!r}{_suggest(data, layouts)}; defined: {sorted(layouts)}")
    if name not in layouts[data]:
        built = list(layouts[data])
        raise _fail(
            where,
            f"{name!r}{_suggest(name, built)} is not a dataset of entry {data!r} (kind "
            f"{config['datasets'][data]['kind']!r}), which builds {built}",
        )
    return f"{data}/{name}", layouts[data][name]


def _compare(where: str, ref: str, lay: Layout, pre_ref: str, pre: Layout, notes: list[str]) -> None:
    """An evaluation dataset against the pretraining one: the channel count must match (an encoder reads a fixed
    number of channels); other channel names or another size are noted."""
    if lay.channels is None or pre.channels is None:
        return
    if len(lay.channels) != len(pre.channels):
        raise _fail(
            where,
            f"dataset {ref} has {len(lay.channels)} channel(s) {list(lay.channels)}, but the encoder is pretrained "
            f"on {pre_ref} with {len(pre.channels)} {list(pre.channels)}: evaluate on data with the same channels",
        )
    if lay.channels != pre.channels:
        notes.append(
            f"config {where}: dataset {ref} has channels {list(lay.channels)}, the encoder is pretrained on "
            f"{pre_ref} with {list(pre.channels)}: the encoder reads channels by position"
        )
    if lay.size is not None and pre.size is not None and max(lay.size) != max(pre.size):
        notes.append(
            f"config {where}: dataset {ref} has {lay.size[0]}x{lay.size[1]} px images, the encoder is pretrained on "
            f"{pre_ref} at {pre.size[0]}x{pre.size[1]} px: its features describe them at another scale"
        )


def _expanded(components: Mapping, channels: Sequence[str] | None, where: str) -> dict:
    """Components with every ``panel`` expanded per channel where the channels are declared, else left out (it
    expands when the run starts, from the dataset's channel names)."""
    from splicer.components import PANEL_KEYS, expand_panels

    panels = {k for k, v in components.items() if isinstance(v, Mapping) and v.get("type") == "panel"}
    for name in sorted(panels):  # a misspelt key fails here even where the channels are not known yet
        if unknown := set(components[name]) - PANEL_KEYS:
            raise ValueError(
                f"{where}.components.{name}: unknown key(s) {sorted(unknown)}; a panel's keys: {sorted(PANEL_KEYS)}"
            )
    if channels is None:
        return {k: v for k, v in components.items() if k not in panels}
    try:
        return expand_panels(components, [], channels)[0]
    except ValueError as err:
        raise ValueError(f"{where}.{err}") from None


def _check_experiment(config: Mapping, ename: str, layouts: Mapping, notes: list[str]) -> None:
    from splicer.components import check_components
    from splicer.config import check_types, validate_run_config
    from splicer.methods import VIEW, build_pairing

    datasets = config["datasets"]
    exp = config["experiments"][ename]
    where = f"experiments.{ename}"
    data = exp["data"]
    if data not in datasets:
        raise _fail(f"{where}.data", f"unknown dataset {data!r}{_suggest(data, datasets)}; defined: {sorted(datasets)}")
    pre_ref, pre = _dataset(config, layouts, ename, exp["pretrain"], f"{where}.pretrain")
    try:
        check_components(
            _expanded(exp["components"], pre.channels, where),
            pre.channels,
            pre.masks,
            pre.size,
            where=f"{where}.components",
        )
    except ValueError as err:
        masks = ""
        if datasets[data].get("segment") and "mask" in str(err):
            masks = f" ({data}'s masks come from its {segmented_masks(datasets[data]['segment'])[1]})"
        raise ValueError(f"config {err}{masks}; pretraining dataset: {pre_ref}") from None
    check_types(exp.get("run_overrides", {}), f"config {where}.run_overrides")
    for i, entry in enumerate(exp["runs"]):
        check_types(entry.get("overrides", {}), f"config {where}.runs[{i}].overrides")
    _check_losses(f"{where}.losses", exp.get("losses"))
    pairings = exp["pairings"]
    for name, inputs in pairings.items():
        for item in inputs:
            if item != VIEW and item not in exp["components"]:
                raise _fail(
                    f"{where}.pairings.{name}",
                    f"{item!r} is neither 'view' nor a component ({sorted(exp['components'])})",
                )
    seen = set()
    for i, run in enumerate(exp["runs"]):
        if run["method"] not in METHODS:
            raise _fail(f"{where}.runs[{i}].method", f"unknown method {run['method']!r}; methods: {list(METHODS)}")
        if run["pairing"] not in pairings:
            raise _fail(
                f"{where}.runs[{i}].pairing", f"unknown pairing {run['pairing']!r}; defined: {sorted(pairings)}"
            )
        key = (run["method"], run["pairing"])
        if key in seen:
            raise _fail(f"{where}.runs[{i}]", f"method {key[0]!r} with pairing {key[1]!r} is listed twice")
        seen.add(key)
    for name, spec in exp["evaluate"].items():
        at = f"{where}.evaluate.{name}.data"
        ref, lay = _dataset(config, layouts, ename, spec["data"], at)
        _compare(at, ref, lay, pre_ref, pre, notes)
    for name in exp.get("supervised", []):
        _dataset(config, layouts, ename, name, f"{where}.supervised")
    for table in ("spectrum", "correlate"):
        for name in exp.get(table, []):
            if name not in exp["evaluate"]:
                raise _fail(f"{where}.{table}", f"{name!r} is not one of the evaluations {sorted(exp['evaluate'])}")
    losses = exp.get("losses") or config["losses"]
    for entry in exp["runs"]:
        run = Run(ename, entry["method"], entry["pairing"], losses[0], 0)
        try:
            cfg = validate_run_config(run_config(config, run), where=f"{where} (run {run.path})")
            method = cfg["method"]
            build_pairing(
                method["name"], method["inputs"], method["loss"], cfg["model"]["embed_dim"], **method["options"]
            )
        except ValueError as err:
            raise _fail(f"{where}.runs ({entry['method']}/{entry['pairing']})", str(err)) from None


def _check_embedding(config: Mapping, name: str) -> None:
    """An embedding export names a run of the grid and a dataset of a declared entry."""
    embedding_run(config, name)
    spec = config["embeddings"][name]
    data, dataset = split_ref(config, spec["experiment"], spec["data"])
    if data not in config["datasets"]:
        raise _fail(f"embeddings.{name}.data", f"unknown dataset entry {data!r}; defined: {sorted(config['datasets'])}")
    if (names := dataset_names(config["datasets"][data])) and dataset not in names:
        raise _fail(f"embeddings.{name}.data", f"entry {data!r} writes datasets {list(names)}, not {dataset!r}")


def _check_figure(config: Mapping, name: str, spec: Mapping, layouts: Mapping) -> None:
    if name not in FIGURES:
        raise _fail(f"figures.{name}", f"unknown figure; figures: {list(FIGURES)}")
    figure = FIGURES[name]
    roles = [r for r in (*TABLE_ROLES, *DATASET_ROLES, *EMBEDDING_ROLES) if r in spec]
    if missing := [r for r in figure.inputs if r not in roles]:
        raise _fail(f"figures.{name}", f"needs input(s) {missing} (accepts {[*figure.inputs, *figure.optional]})")
    if extra := [r for r in roles if r not in (*figure.inputs, *figure.optional)]:
        raise _fail(f"figures.{name}", f"does not read {extra} (accepts {[*figure.inputs, *figure.optional]})")
    for role in TABLE_ROLES:
        for ename in spec.get(role, []):
            if ename not in config["experiments"]:
                experiments = list(config["experiments"])
                raise _fail(f"figures.{name}.{role}", f"unknown experiment {ename!r}{_suggest(ename, experiments)}")
    figure_inputs(config, name)
    for role in DATASET_ROLES:
        for ref in [spec[role]] if isinstance(spec.get(role), str) else spec.get(role, []):
            data, dataset = ref.split("/", 1)
            if dataset not in layouts[data]:
                built = list(layouts[data])
                raise _fail(
                    f"figures.{name}.{role}",
                    f"{dataset!r}{_suggest(dataset, built)} is not a dataset of entry {data!r}, which builds {built}",
                )


def check_config(config: Mapping) -> list[str]:
    """Cross-reference checks the JSON schema cannot express; errors name the key path and the value. Returns
    notes: legal but unusual choices worth a look (an evaluation at another image size than pretraining, say)."""
    from splicer.config import check_types

    notes: list[str] = []
    _check_losses("losses", config["losses"])
    check_types(config.get("run_defaults", {}), "config run_defaults")
    layouts: dict[str, dict[str, Layout]] = {}
    for dname, spec in config["datasets"].items():
        _check_dataset_entry(f"datasets.{dname}", spec)
        for record in archive_targets(config, dname):
            try:
                archive_options(config, spec["kind"], archive_of(record).name)
            except ValueError as err:
                raise _fail(f"datasets.{dname}.source", str(err)) from None
        try:
            layouts[dname] = entry_layouts(spec)
        except ValueError as err:
            raise _fail(f"datasets.{dname}.params", str(err)) from None
    for ename in config["experiments"]:
        _check_experiment(config, ename, layouts, notes)
    for name in config.get("embeddings", {}):
        _check_embedding(config, name)
    for name, spec in config.get("figures", {}).items():
        _check_figure(config, name, spec, layouts)
    if problems := segment_job_problems(config):  # a warning here (a dry run still lists the DAG); the segment
        # rule's onstart hook stops a real run before any job when a segment job of these entries is to run
        warnings.warn("\n".join(problems.values()), stacklevel=2)
    return notes


def segment_job_problems(config: Mapping, data: Iterable[str] | None = None) -> dict[str, str]:
    """``{entry: message}`` for each ``datasets`` entry (of ``data``; default all) whose pretrained segmenter cannot
    run here (TIAToolbox not importable and no weights file, or the weights file missing) and that sets no
    ``fallback``; the message says what to install or where to put the file."""
    from splicer.segment import unavailable

    names = config["datasets"] if data is None else data
    found = {d: unavailable(config["datasets"][d]["segment"]) for d in names if "segment" in config["datasets"][d]}
    return {d: f"config datasets.{d}.segment: {msg}" for d, msg in found.items() if msg}
