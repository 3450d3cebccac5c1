"""Command line: ``splicer {pretrain, embed, probe, spectrum, correlate, evaluate, supervised, make-demo}``.

Each subcommand takes a config and paths, so a Snakemake rule is one line and a user can run one step by hand::

    splicer make-demo mnist_cifar --out data/demo --seed 0
    splicer pretrain --config run.yaml --data data/demo/pretrain --out runs/splicer -s train.epochs=5
    splicer embed --encoder runs/splicer/encoder.pt --data data/demo/rMNIST --out feats.npz
    splicer embed --encoder runs/mine/encoder.pt --data data/mine/cells --out embeddings/ --format h5ad
    splicer probe --features feats.npz --out probe.json
    splicer spectrum --features feats.npz --out spectrum.csv
    splicer correlate --features feats.npz --data data/demo/t_cells --out corr.json

Errors in input (a bad config key, a missing file) print one line naming the fault and exit with status 2; a
pre-empted training run exits with status 143 (checkpoint written, resubmit to resume); a non-finite loss
exits with status 3 (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 143


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splicer", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("pretrain", help="self-supervised pretraining of one method on one dataset")
    s.add_argument("--config", required=True, help="run config (YAML); see splicer.config")
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--out", required=True, help="run directory (resumes from its checkpoint.pt)")
    s.add_argument("--split", default=None, help="train only on this split of the dataset")
    s.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    s = sub.add_parser("embed", help="embed a dataset with a frozen encoder")
    s.add_argument("--encoder", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="features .npz, or (--format h5ad) a folder for <sample>.h5ad files")
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument(
        "--format",
        choices=["npz", "h5ad"],
        default="npz",
        help="npz: features, labels, splits; h5ad: one AnnData per sample (multiplex cells: obs by CellID, X the "
        "marker means, obsm X_splicer and spatial)",
    )

    s = sub.add_parser("probe", help="linear / MLP probe: train on train, select on val, score on test")
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True, help="result .json")
    s.add_argument("--head", choices=["linear", "mlp"], default="linear")
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("spectrum", help="ranked singular values of the representation")
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True, help="result .csv")
    s.add_argument("--split", default="test")

    s = sub.add_parser("correlate", help="mean |corr| of representation elements with channel intensities")
    s.add_argument("--features", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="result .json")
    s.add_argument("--split", default="test")

    s = sub.add_parser("evaluate", help="embed + probe (+ spectrum, correlate) every evaluation set of one run")
    s.add_argument("--encoder", required=True)
    s.add_argument("--eval", action="append", required=True, metavar="NAME=DATASET_DIR", help="an evaluation set")
    s.add_argument("--out", required=True, help="result .json (probes, spectra, correlations)")
    s.add_argument("--spectrum", action="append", default=[], metavar="NAME")
    s.add_argument("--correlate", action="append", default=[], metavar="NAME")
    s.add_argument("--head", choices=["linear", "mlp"], default="linear")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")

    s = sub.add_parser("supervised", help="supervised ceiling: the run config's encoder trained with labels")
    s.add_argument("--config", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="run directory (resumable; result.json is written last)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE")

    s = sub.add_parser("make-demo", help="generate one embedded demo data family")
    s.add_argument("family")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="generator parameter")
    return p


def _key_value(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {item!r} must look like NAME=VALUE")
    return key, value


def _run(args: argparse.Namespace) -> object:
    from splicer import run

    if args.command == "pretrain":
        from splicer.config import load_run_config

        cfg = load_run_config(args.config, args.set)
        return run.pretrain(cfg, args.data, args.out, split=args.split)
    if args.command == "embed":
        return str(run.embed_dataset(args.encoder, args.data, args.out, args.device, args.batch_size, args.format))
    if args.command == "probe":
        return run.probe_features(args.features, args.out, head=args.head, seed=args.seed)
    if args.command == "spectrum":
        return run.spectrum_features(args.features, args.out, split=args.split)[:10].tolist()
    if args.command == "evaluate":
        evals = dict(_key_value(item, "--eval") for item in args.eval)
        return run.evaluate_run(
            args.encoder, evals, args.out, args.spectrum, args.correlate, args.head, args.seed, args.device
        )
    if args.command == "supervised":
        from splicer.config import load_run_config

        return run.supervised(load_run_config(args.config, args.set), args.data, args.out, seed=args.seed)
    if args.command == "correlate":
        return run.correlate_features(args.features, args.data, args.out, split=args.split)
    from splicer.data.demo import make_demo

    params = {key: yaml.safe_load(value) for key, value in (_key_value(i, "--param") for i in args.param)}
    return make_demo(args.family, args.out, seed=args.seed, **params)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``splicer`` command; returns the process exit status."""
    from splicer.train import NonFiniteLossError, Preempted

    args = _parser().parse_args(argv)
    try:
        result = _run(args)
    except Preempted as err:
        print(f"splicer {args.command}: pre-empted: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except NonFiniteLossError as err:
        print(f"splicer {args.command}: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"splicer {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(result, indent=2, default=str) if not isinstance(result, str) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
