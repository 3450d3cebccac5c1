"""The pairing spec and the one model that serves Baseline, Σ-JE, TriDeNT and SpliCER.

Every method of the paper is *a primary encoder + projector whose embedding is registered to K paired
branches*. A :class:`PairingSpec` lists the branches (which input each sees, whether it shares the primary
encoder and projector) and the registered pairs (which embeddings, which chunk of each, which loss and weight).

Branch inputs are component names (see :mod:`splicer.components`) or the special input ``"view"``: a second
augmented view of the whole image, which goes through the primary encoder *and* projector (the usual SSL
setup). Component branches get an encoder and projector of their own; component encoders of identical input
shape run fused as one grouped network (:class:`splicer.encoders.FusedEncoders`).

Presets (registered in :data:`splicer.registry.METHODS`):

* ``baseline``: one branch, ``view``, registered to the whole primary embedding.
* ``sigma_je``: one branch per component, each registered to the whole primary embedding.
* ``trident``: the ``view`` branch plus the component branches, a loss over *all* pairs of the primary and the
  branches (TriDeNT: two views through one shared encoder, the paired input through its own).
* ``splicer``: one branch per input, branch i registered to chunk i of the primary embedding only (paper Eq. 1
  and 4); chunks equal by default, uneven sizes and a loss per chunk allowed (paper §6). A ``view`` input is
  registered chunk-to-chunk (the same slice of its shared projector's output). The whole joint-embedding loss
  of pair i, regulariser terms included, is computed on the chunk: ``L_JE,i(ē_i, e_i*)`` as Eq. 4 writes it,
  which makes the chunks' gradients exactly decoupled. TriDeNT's dormant split mode instead applies VICReg's
  variance/covariance terms to the whole primary embedding; ``primary_regulariser="full"`` selects that.
  As in that split mode there is no primary-vs-primary term unless ``view`` is an input (``include_view=True``
  puts it first): with a single paired component, a view chunk keeps a learning signal for the features that
  component lacks, as TriDeNT's unimodal pair does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import torch
from torch import Tensor, nn

from splicer.components import Component
from splicer.losses import build_loss

__all__ = [
    "PRIMARY",
    "VIEW",
    "Branch",
    "Pair",
    "PairingSpec",
    "SSLModel",
    "SupervisedModel",
    "baseline_pairing",
    "build_pairing",
    "method_options",
    "sigma_je_pairing",
    "splicer_pairing",
    "trident_pairing",
]

PRIMARY = "primary"
VIEW = "view"


@dataclass(frozen=True)
class Branch:
    """A paired branch: its input (``"view"`` or a component name) and whether it shares the primary's nets."""

    name: str
    input: str
    shared: bool  # True: primary encoder and projector (a second view); False: its own encoder and projector


@dataclass(frozen=True)
class Pair:
    """One registered pair of embeddings; a chunk index slices an output of the primary projector."""

    left: str
    right: str
    left_chunk: int | None = None
    right_chunk: int | None = None
    loss: str = "vicreg"
    weight: float = 1.0


@dataclass(frozen=True)
class PairingSpec:
    """Branches, pairs and the chunk sizes of the primary embedding (``None``: the embedding is not split)."""

    method: str
    embed_dim: int
    branches: tuple[Branch, ...]
    pairs: tuple[Pair, ...]
    chunk_sizes: tuple[int, ...] | None = None
    primary_regulariser: str = "chunk"

    def __post_init__(self) -> None:
        names = [b.name for b in self.branches]
        if len(set(names)) != len(names) or PRIMARY in names:
            raise ValueError(f"branch names must be unique and not {PRIMARY!r}: {names}")
        if self.chunk_sizes is not None and (
            any(c <= 0 for c in self.chunk_sizes) or sum(self.chunk_sizes) != self.embed_dim
        ):
            raise ValueError(
                f"chunk sizes {list(self.chunk_sizes)} must be positive and sum to the embedding size "
                f"{self.embed_dim} (they sum to {sum(self.chunk_sizes)})"
            )
        if self.primary_regulariser not in ("chunk", "full"):
            raise ValueError(f"primary_regulariser must be 'chunk' or 'full', got {self.primary_regulariser!r}")
        n_chunks = len(self.chunk_sizes or ())
        for pair in self.pairs:
            for node, chunk in ((pair.left, pair.left_chunk), (pair.right, pair.right_chunk)):
                if node != PRIMARY and node not in names:
                    raise ValueError(f"pair {pair.left}-{pair.right} names unknown branch {node!r}")
                if chunk is not None:
                    if not self.on_primary_projector(node):
                        raise ValueError(f"pair {pair.left}-{pair.right}: only primary-projector outputs are chunked")
                    if not 0 <= chunk < n_chunks:
                        raise ValueError(f"pair {pair.left}-{pair.right}: chunk {chunk} out of range ({n_chunks})")
        self.branch_dims()  # validates that every own-projector branch has one consistent size

    def on_primary_projector(self, node: str) -> bool:
        """Whether ``node``'s embedding comes out of the primary projector (the primary or a shared view)."""
        return node == PRIMARY or any(b.name == node and b.shared for b in self.branches)

    def chunk_slice(self, chunk: int | None) -> slice:
        """The slice of the primary embedding that chunk ``chunk`` covers (``None``: all of it)."""
        if chunk is None:
            return slice(None)
        assert self.chunk_sizes is not None
        start = sum(self.chunk_sizes[:chunk])
        return slice(start, start + self.chunk_sizes[chunk])

    def width(self, node: str, chunk: int | None) -> int | None:
        """Size of ``node``'s registered embedding, or ``None`` if it has its own (not yet fixed) projector."""
        if not self.on_primary_projector(node):
            return None
        return self.embed_dim if chunk is None else self.chunk_sizes[chunk]  # type: ignore[index]

    def branch_dims(self) -> dict[str, int]:
        """Output size of each own-projector branch, implied by what it is registered to."""
        dims: dict[str, int] = {}
        for pair in self.pairs:
            for node, other, chunk in (
                (pair.left, pair.right, pair.right_chunk),
                (pair.right, pair.left, pair.left_chunk),
            ):
                if self.on_primary_projector(node):
                    continue
                want = self.width(other, chunk) or self.embed_dim
                if dims.setdefault(node, want) != want:
                    raise ValueError(f"branch {node!r} is registered to embeddings of sizes {dims[node]} and {want}")
        for b in self.branches:
            if not b.shared:
                dims.setdefault(b.name, self.embed_dim)
        return dims


def _branches(inputs: Sequence[str]) -> tuple[Branch, ...]:
    if not inputs:
        raise ValueError("a method needs at least one paired input (a component name or 'view')")
    if len(set(inputs)) != len(inputs):
        raise ValueError(f"paired inputs must be distinct: {list(inputs)}")
    return tuple(Branch(name=i, input=i, shared=(i == VIEW)) for i in inputs)


def baseline_pairing(inputs: Sequence[str], loss: str, embed_dim: int) -> PairingSpec:
    """Baseline: a second view of the image registered to the whole primary embedding."""
    if list(inputs) not in ([], [VIEW]):
        raise ValueError(f"baseline pairs only a second view of the image; got inputs {list(inputs)}")
    return PairingSpec("baseline", embed_dim, _branches([VIEW]), (Pair(PRIMARY, VIEW, loss=loss),))


def sigma_je_pairing(inputs: Sequence[str], loss: str, embed_dim: int) -> PairingSpec:
    """Σ-JE: every component registered to the whole primary embedding."""
    branches = _branches(inputs)
    return PairingSpec("sigma_je", embed_dim, branches, tuple(Pair(PRIMARY, b.name, loss=loss) for b in branches))


def trident_pairing(inputs: Sequence[str], loss: str, embed_dim: int) -> PairingSpec:
    """TriDeNT: a view plus the components, a loss over all pairs of the primary and the branches."""
    inputs = [VIEW, *[i for i in inputs if i != VIEW]]
    branches = _branches(inputs)
    nodes = [PRIMARY, *[b.name for b in branches]]
    return PairingSpec("trident", embed_dim, branches, tuple(Pair(a, b, loss=loss) for a, b in combinations(nodes, 2)))


def splicer_pairing(
    inputs: Sequence[str],
    loss: str,
    embed_dim: int,
    *,
    chunk_sizes: Sequence[int] | None = None,
    chunk_losses: Sequence[str] | None = None,
    chunk_weights: Sequence[float] | None = None,
    primary_regulariser: str = "chunk",
    include_view: bool = False,
) -> PairingSpec:
    """SpliCER: branch i registered to chunk i of the primary embedding only (see the module docstring)."""
    if include_view and VIEW not in inputs:
        inputs = [VIEW, *inputs]
    branches = _branches(inputs)
    k = len(branches)
    if chunk_sizes is None:
        if embed_dim % k:
            raise ValueError(f"embedding size {embed_dim} does not split into {k} equal chunks; give chunk_sizes")
        chunk_sizes = [embed_dim // k] * k
    for name, values in (
        ("chunk_sizes", chunk_sizes),
        ("chunk_losses", chunk_losses),
        ("chunk_weights", chunk_weights),
    ):
        if values is not None and len(values) != k:
            raise ValueError(f"{name} has {len(values)} entries but there are {k} paired inputs {list(inputs)}")
    pairs = tuple(
        Pair(
            PRIMARY,
            b.name,
            left_chunk=i,
            right_chunk=i if b.shared else None,
            loss=chunk_losses[i] if chunk_losses else loss,
            weight=float(chunk_weights[i]) if chunk_weights else 1.0,
        )
        for i, b in enumerate(branches)
    )
    return PairingSpec("splicer", embed_dim, branches, pairs, tuple(int(c) for c in chunk_sizes), primary_regulariser)


def _preset(method: str) -> Callable[..., PairingSpec]:
    from splicer.registry import METHODS, resolve

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    return resolve(METHODS[method].pairing)


def method_options(method: str) -> tuple[str, ...]:
    """The ``options`` a method preset takes (its keyword-only parameters)."""
    params = inspect.signature(_preset(method)).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def build_pairing(method: str, inputs: Sequence[str], loss: str, embed_dim: int, **options: object) -> PairingSpec:
    """Build the pairing spec of a preset method over paired ``inputs`` (component names and/or ``"view"``)."""
    allowed = set(method_options(method))
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {sorted(allowed)}")
    return _preset(method)(inputs, loss, embed_dim, **options)


@dataclass
class _Group:
    """Own-encoder branches whose inputs share one shape, run as one (possibly fused) encoder."""

    key: str
    branches: list[str] = field(default_factory=list)


class SSLModel(nn.Module):
    """A primary encoder + projector registered to the branches of a :class:`PairingSpec`.

    ``training_loss(x, masks, generator)`` augments the primary input and every branch input on the batch's
    device, encodes them (shared inputs in one pass, identical component encoders fused), projects, and sums the
    weighted pair losses. The trained ``primary_encoder`` is what downstream evaluation uses.
    """

    def __init__(
        self,
        pairing: PairingSpec,
        components: Mapping[str, Component],
        input_shape: tuple[int, int, int],
        encoder: Mapping,
        projector_hidden: Sequence[int],
        augment: nn.Module | None = None,
        loss_options: Mapping[str, Mapping] | None = None,
        fuse: bool = True,
    ) -> None:
        from splicer.encoders import FusedEncoders, build_encoder
        from splicer.heads import Projector

        super().__init__()
        self.pairing = pairing
        self.augment = augment
        self.components = dict(components)
        c, h, w = input_shape
        self.primary_encoder = build_encoder(in_channels=c, image_size=max(h, w), **encoder)
        self.primary_projector = Projector(self.primary_encoder.out_dim, projector_hidden, pairing.embed_dim)

        dims = pairing.branch_dims()
        groups: dict[tuple[int, int, int], _Group] = {}
        for b in pairing.branches:
            if b.shared:
                continue
            if b.input not in self.components:
                raise ValueError(f"paired input {b.input!r} is not a defined component: {sorted(self.components)}")
            shape = self.components[b.input].out_shape(input_shape)
            groups.setdefault(shape, _Group(f"g{len(groups)}")).branches.append(b.name)
        self.groups = list(groups.values())
        self.branch_encoders = nn.ModuleDict()
        rep_dims: dict[str, int] = {}
        for shape, group in groups.items():
            nets = [build_encoder(in_channels=shape[0], image_size=max(shape[1:]), **encoder) for _ in group.branches]
            self.branch_encoders[group.key] = FusedEncoders(nets) if fuse and len(nets) > 1 else nn.ModuleList(nets)
            rep_dims.update(dict.fromkeys(group.branches, nets[0].out_dim))
        self.branch_projectors = nn.ModuleDict(
            {name: Projector(rep_dims[name], projector_hidden, dim) for name, dim in dims.items()}
        )
        options = dict(loss_options or {})
        self.losses = nn.ModuleDict({p.loss: build_loss(p.loss, **options.get(p.loss, {})) for p in pairing.pairs})

    def _aug(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x if self.augment is None else self.augment(x, generator)

    def embeddings(
        self, x: Tensor, masks: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Embeddings of the primary input and of every branch, keyed by node name."""
        n = x.shape[0]
        shared = [b.name for b in self.pairing.branches if b.shared]
        views = self._aug(x.repeat(1 + len(shared), 1, 1, 1), generator)
        e = self.primary_projector(self.primary_encoder(views))
        out = dict(zip([PRIMARY, *shared], e.split(n), strict=True))
        for group in self.groups:
            inputs = torch.cat([self.components[self._input(b)](x, masks) for b in group.branches])
            inputs = self._aug(inputs, generator).split(n)
            nets = self.branch_encoders[group.key]
            reps = (
                nets(inputs)
                if not isinstance(nets, nn.ModuleList)
                else [m(i) for m, i in zip(nets, inputs, strict=True)]
            )
            for name, rep in zip(group.branches, reps, strict=True):
                out[name] = self.branch_projectors[name](rep)
        return out

    def _input(self, branch: str) -> str:
        return next(b.input for b in self.pairing.branches if b.name == branch)

    def pair_losses(self, emb: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the pair losses and per-pair metrics, from :meth:`embeddings`' output."""
        spec = self.pairing
        total = torch.zeros((), device=next(iter(emb.values())).device)
        metrics: dict[str, Tensor] = {}
        for pair in spec.pairs:
            a = emb[pair.left][:, spec.chunk_slice(pair.left_chunk)]
            b = emb[pair.right][:, spec.chunk_slice(pair.right_chunk)]
            if spec.primary_regulariser == "full" and pair.loss == "vicreg":
                value, terms = self.losses[pair.loss](a, b, reg_a=emb[pair.left], reg_b=emb[pair.right])
            else:
                value, terms = self.losses[pair.loss](a, b)
            tag = f"{pair.left}{'' if pair.left_chunk is None else f'[{pair.left_chunk}]'}-{pair.right}"
            metrics[f"loss/{tag}"] = value.detach()
            metrics.update({f"{k}/{tag}": v for k, v in terms.items()})
            total = total + pair.weight * value
        return total, metrics

    def training_loss(
        self, x: Tensor, masks: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The model protocol the trainer drives: total loss and detached metrics for one batch."""
        return self.pair_losses(self.embeddings(x, masks, generator))


class SupervisedModel(nn.Module):
    """An encoder and a linear head trained with cross-entropy: the supervised ceiling, driven by the same trainer
    (:func:`splicer.train.train` with ``labels``) as the self-supervised methods, with the same augmentation."""

    def __init__(self, encoder: nn.Module, n_classes: int, augment: nn.Module | None = None) -> None:
        super().__init__()
        self.primary_encoder = encoder
        self.head = nn.Linear(encoder.out_dim, n_classes)
        self.augment = augment

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.primary_encoder(x))

    def training_loss(
        self, x: Tensor, masks: Tensor | None, generator: torch.Generator | None, labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the augmented batch; ``accuracy`` (of the batch) as a metric."""
        import torch.nn.functional as F

        if self.augment is not None:
            x = self.augment(x, generator)
        logits = self(x)
        loss = F.cross_entropy(logits, labels)
        return loss, {"accuracy": (logits.detach().argmax(1) == labels).float().mean()}
