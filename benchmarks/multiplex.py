"""Build and embed throughput of the ``multiplex`` kind on one generated slide of >= 100 000 cells.

Writes a synthetic MCMICRO project folder (``splicer.data.mcmicro_example``: 11-channel tiled zlib pyramidal
OME-TIFF, uint32 cell mask, mcquant table), builds it with the README's worked-example params (9 crop channels,
32 px, percentile normalisation, focal-cell masks, ``cells`` = every cell plus a 50 000-cell ``pretrain``), then
exports every cell's embedding to AnnData with ``splicer embed --format h5ad``'s function. Each phase runs in its
own process; prints its cells/s (wall, and per CPU second: the wall clock of a shared machine depends on its load),
its peak resident memory, tiles decoded and bytes written. A figure, not a test::

    python benchmarks/multiplex.py [--cells 100000] [--workdir /tmp/mcmicro-bench] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


class _Memory(threading.Thread):
    """Peak anonymous and file-backed resident memory of this process (``/proc/self/status``), sampled every 0.2 s:
    memory-mapped dataset pages being written count as file-backed (page cache the kernel can write back and drop),
    the tile cache, tables and batches as anonymous."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.running = True

    def run(self) -> None:
        while self.running:
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(value.split()[0]))
            time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        self.running = False
        self.join()
        return {"peak_anon_mb": round(self.peak["RssAnon"] / 1024), "peak_file_mb": round(self.peak["RssFile"] / 1024)}


def _size_for(cells: int, spacing: int) -> int:
    """Slide side (px) whose jittered grid holds ~``cells`` cells (92 % of the grid points carry one)."""
    per_side = math.ceil(math.sqrt(cells / 0.92)) + 1
    return per_side * spacing + 2 * (spacing // 2 + 4)


def _phase(name: str, args: argparse.Namespace, queue: multiprocessing.Queue) -> None:
    """One phase in its own process, so that its peak memory is its own; puts its figures on ``queue``."""
    from splicer.data.build import build_data
    from splicer.data.format import load_dataset
    from splicer.data.mcmicro_example import write_sample

    work = args.workdir
    memory = _Memory()
    memory.start()
    start, cpu0 = time.perf_counter(), _cpu()
    out: dict = {}
    if name == "generate" and args.slide is not None:  # a slide generated before
        shutil.copytree(args.slide, work / "mc")
        out = {"reused": str(args.slide)}
    elif name == "generate":
        size = _size_for(args.cells, args.spacing)
        truth = write_sample(work / "mc", "bench", size=size, spacing=args.spacing, seed=0, tile=1024)
        image = work / "mc" / "bench" / "registration" / "bench.ome.tif"
        out = {"size_px": size, "cells_in_table": len(truth), "image_mib": round(image.stat().st_size / 2**20)}
    elif name == "build":
        spec = {
            "kind": "multiplex",
            "params": {"path": str(work / "mc"), "drop": ["DNA_[2-9]", "AF*"], "masks": ["cell"], "split_by": "cell"},
        }
        build_data(spec, work / "data", [])
        cells = load_dataset(work / "data" / "cells")
        reading = cells.meta["info"]["reading"]["bench"]
        written = sum(f.stat().st_size for d in ("cells", "pretrain") for f in (work / "data" / d).iterdir())
        out = {
            "cells": cells.n,
            "pretrain_cells": load_dataset(work / "data" / "pretrain").n,
            "tiles_decoded": reading["tiles_decoded"],
            "tiles_total": reading["tiles_total"],
            "gib_written": round(written / 2**30, 2),
            "tile_cache_mb": 512,
        }
    else:  # torch only here: the build's memory is its own
        import torch

        from splicer.encoders import build_encoder, save_encoder
        from splicer.export import export_h5ad

        torch.set_num_threads(args.threads)
        cells = load_dataset(work / "data" / "cells")
        encoder = build_encoder("resnet", cells.channels, 32, base_width=8, blocks=[1, 1])  # the worked example's
        save_encoder(encoder, work / "encoder.pt")
        export_h5ad(work / "encoder.pt", work / "data" / "cells", work / "embeddings", args.device, args.batch_size)
        h5ad = sum(f.stat().st_size for f in (work / "embeddings").glob("*.h5ad"))
        out = {"cells": cells.n, "device": args.device, "batch_size": args.batch_size, "h5ad_mib": round(h5ad / 2**20)}
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
    out.update({"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)})
    if "cells" in out:
        out.update({"cells_per_s": round(out["cells"] / seconds), "cells_per_cpu_s": round(out["cells"] / cpu)})
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out.update(memory.stop())
    queue.put(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--spacing", type=int, default=18)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/splicer-multiplex-bench"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the embedding")
    p.add_argument("--keep", action="store_true", help="keep the generated slide and outputs")
    p.add_argument("--slide", type=Path, help="reuse the MCMICRO folder of an earlier run (copied)")
    args = p.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    context = multiprocessing.get_context("spawn")
    for name in ("generate", "build", "embed"):
        queue = context.Queue()
        proc = context.Process(target=_phase, args=(name, args, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{name}: failed (exit {proc.exitcode})")
            return 1
        print(f"{name}: {json.dumps(queue.get())}", flush=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min)")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
