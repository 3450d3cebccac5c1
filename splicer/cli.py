"""Command line: ``splicer {pretrain, embed, probe, spectrum, correlate, evaluate, supervised, make-demo}``.

Each subcommand takes a config and paths, so a Snakemake rule is one line and a user can run one step by hand::

    splicer make-demo mnist_cifar --out data/demo --seed 0
    splicer pretrain --config run.yaml --data data/demo/pretrain --out runs/splicer -s train.epochs=5
    splicer embed --encoder runs/splicer/encoder.pt --data data/demo/rMNIST --out feats.npz
    splicer embed --encoder runs/mine/encoder.pt --data data/mine/cells --out embeddings/ --format h5ad
    splicer probe --features feats.npz --out probe.json
    splicer spectrum --features feats.npz --out spectrum.csv
    splicer correlate --features feats.npz --data data/demo/t_cells --out corr.json

Errors in input (a bad config key, a missing file, a truncated dataset or encoder) print one line naming the
fault and exit with status 2; a pre-empted training run exits with status 143 (SIGTERM / SIGUSR1; checkpoint
written, resubmit to resume), one stopped with Ctrl-C (SIGINT) with status 130 (checkpoint written, rerun to
resume); a non-finite loss exits with status 3 (the last good checkpoint is kept); a run directory in use by
another process exits with status 75 (nothing written; try again when it is free).

``pretrain`` with ``train.devices`` x ``train.nodes`` > 1 in the run config starts that many processes
itself: ``srun`` inside a SLURM allocation, ``torchrun --standalone`` elsewhere (:mod:`splicer.distributed`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_PREEMPTED = 143


def _config_arguments(s: argparse.ArgumentParser) -> None:
    """--config FILE or --config-json TEXT (the pipeline passes the run config inline), plus -s overrides."""
    given = s.add_mutually_exclusive_group(required=True)
    given.add_argument("--config", help="run config (YAML); see splicer.config")
    given.add_argument("--config-json", metavar="JSON", help="the run config itself, as JSON")
    s.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")


def _evaluation_arguments(s: argparse.ArgumentParser, required: bool) -> None:
    s.add_argument(
        "--eval", action="append", required=required, default=[], metavar="NAME=DATASET_DIR", help="an evaluation set"
    )
    s.add_argument("--spectrum", action="append", default=[], metavar="NAME")
    s.add_argument("--correlate", action="append", default=[], metavar="NAME")
    s.add_argument("--head", choices=["linear", "mlp"], default="linear")
    s.add_argument("--device", default="cpu", help="evaluation device")


def _run_config(args: argparse.Namespace) -> dict:
    import json

    from splicer.config import load_run_config

    if args.config_json is not None:
        try:
            given = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config-json is not valid JSON: {err}") from None
        if not isinstance(given, dict):
            raise ValueError(f"--config-json must be a JSON object, got {type(given).__name__}")
        return load_run_config(given, args.set)
    return load_run_config(args.config, args.set)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splicer", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("pretrain", help="self-supervised pretraining of one method on one dataset")
    _config_arguments(s)
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--out", required=True, help="run directory (resumes from its checkpoint.pt)")
    s.add_argument("--split", default=None, help="train only on this split of the dataset")
    s.add_argument(
        "--cpus-per-task",
        type=int,
        default=None,
        help="CPUs of each process when train.devices x train.nodes > 1 starts them with srun (SLURM)",
    )
    s.add_argument(
        "--evaluate-out",
        default=None,
        metavar="JSON",
        help="then evaluate the encoder in the same process (the --eval/--spectrum/--correlate/--head options "
        "of `splicer evaluate`) and write the result here",
    )
    _evaluation_arguments(s, required=False)

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
    s.add_argument("--device", default="cpu", help="where the linear probe's torch solver runs (see splicer.evaluate)")

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
    s.add_argument("--out", required=True, help="result .json (probes, spectra, correlations)")
    _evaluation_arguments(s, required=True)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("supervised", help="supervised ceiling: the run config's encoder trained with labels")
    _config_arguments(s)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="run directory (resumable; result.json is written last)")
    s.add_argument("--seed", type=int, default=0)

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
        evals = dict(_key_value(item, "--eval") for item in args.eval)
        if bool(evals) != (args.evaluate_out is not None):
            raise ValueError("pretrain: --evaluate-out and --eval go together (evaluate after pretraining)")
        cfg = _run_config(args)
        summary = run.pretrain(cfg, args.data, args.out, split=args.split)
        if args.evaluate_out is None or _rank() != 0:  # one evaluation per run, by rank 0
            return summary
        seed = int(cfg["train"].get("seed", 0))
        encoder = f"{args.out}/encoder.pt"
        return run.evaluate_run(
            encoder, evals, args.evaluate_out, args.spectrum, args.correlate, args.head, seed, args.device
        )
    if args.command == "embed":
        return str(run.embed_dataset(args.encoder, args.data, args.out, args.device, args.batch_size, args.format))
    if args.command == "probe":
        return run.probe_features(args.features, args.out, head=args.head, seed=args.seed, device=args.device)
    if args.command == "spectrum":
        return run.spectrum_features(args.features, args.out, split=args.split)[:10].tolist()
    if args.command == "evaluate":
        evals = dict(_key_value(item, "--eval") for item in args.eval)
        return run.evaluate_run(
            args.encoder, evals, args.out, args.spectrum, args.correlate, args.head, args.seed, args.device
        )
    if args.command == "supervised":
        return run.supervised(_run_config(args), args.data, args.out, seed=args.seed)
    if args.command == "correlate":
        return run.correlate_features(args.features, args.data, args.out, split=args.split)
    from splicer.data.demo import make_demo

    params = {key: yaml.safe_load(value) for key, value in (_key_value(i, "--param") for i in args.param)}
    return make_demo(args.family, args.out, seed=args.seed, **params)


def _launch(args: argparse.Namespace, argv: Sequence[str]) -> int | None:
    """Start the processes of a multi-process ``pretrain`` (their exit status), or ``None`` to train here."""
    from splicer.distributed import exec_launch, launch_command

    train = _run_config(args)["train"]
    cmd = launch_command(
        argv, int(train.get("devices", 1)), int(train.get("nodes", 1)), cpus_per_task=args.cpus_per_task
    )
    return None if cmd is None else exec_launch(cmd)


def _rank() -> int:
    from splicer.distributed import launch_env

    env = launch_env()
    return 0 if env is None else env.rank


def main(argv: Sequence[str] | None = None, warm: bool = True) -> int:
    """Entry point of the ``splicer`` command; returns the process exit status.

    With ``SPLICER_WARM_SOCKET`` set (a local pipeline run with ``warm_start``) and ``warm``, the command runs in
    the warm server's freshly forked worker instead of importing torch here (:mod:`splicer.warm`); with no server
    listening it runs here."""
    import os
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    if warm and (path := os.environ.get("SPLICER_WARM_SOCKET")):
        from splicer.warm import forward

        if (status := forward(path, argv)) is not None:
            return status
        del os.environ["SPLICER_WARM_SOCKET"]  # running here: processes this one starts (torchrun ranks) too

    from splicer.run import RunLocked
    from splicer.train import NonFiniteLossError, Preempted

    args = _parser().parse_args(argv)
    try:
        if args.command == "pretrain" and (status := _launch(args, argv)) is not None:
            return status
        result = _run(args)
        if args.command == "pretrain" and _rank() != 0:  # one summary per run, from rank 0
            return 0
    except Preempted as err:
        if err.signum == signal.SIGINT:
            print(f"splicer {args.command}: interrupted: {err}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"splicer {args.command}: pre-empted: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:  # a second Ctrl-C while training, or Ctrl-C outside training
        print(f"splicer {args.command}: interrupted (rerun to resume from the last checkpoint)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunLocked as err:
        print(f"splicer {args.command}: error: {err}", file=sys.stderr)
        return EXIT_LOCKED
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
