"""Warm start: one server process imports torch, scikit-learn and splicer once and forks a worker per command.

A local run of the demo starts ~160 short ``splicer`` jobs. A fresh process spends ~6 s of CPU importing torch,
``torch._dynamo`` (every torch optimiser imports it when built), scikit-learn and splicer before its first step:
a multiplex run took 13.7 s, 6.2 s of them training. With ``warm_start: true`` in the pipeline config, a local
Snakemake run starts :func:`serve` before its first job (``onstart``) and the ``splicer`` command of each job,
seeing ``SPLICER_WARM_SOCKET`` in its environment, hands its arguments, working directory, environment and
standard streams (the file descriptors themselves) to the server instead of importing anything. The server forks
a *supervisor*, which forks the *worker* that runs :func:`splicer.cli.main` as the fresh process would have, and
reports the worker's exit status back. Nothing else changes: same command line, same log file, same exit
statuses, same files; tests/test_warm.py checks that a run through the server writes the same weights, bit for
bit, as a fresh process.

What a fresh process would see, the worker sees: the client's environment (``OMP_NUM_THREADS`` applied to torch's
thread pool), working directory, ``sys.argv``, standard streams, default signal handlers, freshly seeded
``random`` / ``numpy.random`` global state, and ``atexit`` handlers run at the end. What Python reads only when
it starts (``PYTHONPATH``, ``PYTHONHASHSEED``, ``PYTHONWARNINGS``) is the server's: Snakemake started it with the
environment its jobs inherit. A job from another interpreter (another ``sys.prefix`` or version, e.g. a rule in
its own conda environment), or with other thread-count variables than the server's (:data:`THREAD_VARIABLES`,
which Snakemake sets to a job's ``threads``: the BLAS and OpenMP pools were sized when the server imported them),
is refused and runs in its own process. Signals reaching the client
(SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP: Ctrl-C, Snakemake stopping a job) are passed to the worker, so the
trainer still checkpoints and exits 130 / 143; signals the job inherited as ignored (``nohup``, a background job
of a script) are ignored in the worker too, until its code installs a handler, as in a fresh process (the
trainer's for SIGINT, SIGTERM and SIGUSR1). If the client dies, its worker gets SIGTERM. A worker killed by
signal N makes the client exit 128 + N (a fresh process would die of the signal itself: the shell reports both as
128 + N).

Falling back is always safe: with no server listening (not started yet, still importing, stopped, or the job
runs on another machine, as under SLURM) the command runs in its own process as before; the pipeline never starts
a server inside a SLURM job or for a cluster executor. The server exits when the Snakemake process that started
it ends (``onsuccess`` / ``onerror`` stop it; it also notices its parent gone within a second).

One difference shows: a rule's ``benchmark:`` file measures the job's own process tree, so with a warm server its
wall clock (``s``) is the job's but its ``cpu_time`` and ``max_rss`` are the client's (the worker is the server's
child). This module imports only the standard library at the top: the client side runs before anything heavy.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV", "PRELOAD", "Server", "forward", "serve", "start", "stop", "wanted"]

ENV = "SPLICER_WARM_SOCKET"
# What every training / evaluation job imports; imported once by the server.
PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",  # imported lazily by every torch.optim optimiser: ~1.5-2 s per process
    "torch.optim",
    "sklearn.linear_model",
    "splicer.cli",
    "splicer.run",
    "splicer.train",
    "splicer.evaluate",
    "splicer.methods",
    "splicer.augment",
)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
# What Snakemake sets to a job's `threads` in its shell (snakemake/shell.py); the server is started with the same.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_HEADER = struct.Struct("!Q")
_POLL_S = 1.0


# ------------------------------------------------------------------------------------------------- client


def _interpreter() -> list[str]:
    """What a job's interpreter must share with the server's: the executable's environment and version (a rule
    run in its own conda env under ``--sdm conda`` is refused and runs in its own process)."""
    return [sys.prefix, sys.version]


def _readline(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One ``\\n``-terminated message from ``conn``; ``None`` at end of stream or when the peer reset it (a server
    that closed with this request still queued)."""
    while b"\n" not in buf:
        try:
            chunk = conn.recv(64)
        except OSError:
            return None
        if not chunk:
            return None
        buf.extend(chunk)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def forward(path: str, argv: Sequence[str]) -> int | None:
    """Run ``splicer <argv>`` in the warm server at ``path``; its exit status, or ``None`` when no server took the
    job (the caller then runs it itself: nothing was started)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        ignored = [int(sig) for sig in FORWARDED if signal.getsignal(sig) is signal.SIG_IGN]  # e.g. under nohup
        request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "python": _interpreter()}
        request["ignored"] = ignored
        payload = json.dumps(request).encode()
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
    except OSError:
        conn.close()
        return None

    def pass_on(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(f"S{signum}\n".encode())

    # every one, inherited-ignored too: the worker's dispositions decide, as a fresh process's would (it ignores
    # them unless its code installs a handler: the trainer catches SIGINT even when started with it ignored)
    previous = {sig: signal.signal(sig, pass_on) for sig in FORWARDED}
    buf = bytearray()
    started = False
    try:
        while (line := _readline(conn, buf)) is not None:
            kind, value = line[:1], line[1:].decode()
            if kind == b"R":  # refused (another interpreter or environment): run it here
                return None
            if kind == b"P":
                started = True
            elif kind == b"X":
                code = int(value)
                return 128 - code if code < 0 else code
        if not started:  # the server went away before starting the job: run it here
            return None
        print(f"splicer: the warm server ({path}) lost this job; rerun it", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        conn.close()


# ------------------------------------------------------------------------------------------------- worker


def _set_dispositions(ignored: Sequence[int]) -> None:
    """A fresh Python's signal dispositions: defaults, Ctrl-C as KeyboardInterrupt, inherited ignores kept."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN if int(sig) in ignored else signal.SIG_DFL)
    if int(signal.SIGINT) not in ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _become_fresh(request: dict, fds: Sequence[int]) -> None:
    """Turn this forked process into what ``python -m splicer.cli`` started by the client would have been."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams, open until it exits
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))  # as `python -u`: text streams line-buffered
    sys.stdout = open(1, "w", buffering=1 if unbuffered else -1, closefd=False)  # noqa: SIM115
    if unbuffered:
        sys.stdout.reconfigure(write_through=True)
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # a worker never forwards again
    sys.argv = ["splicer", *request["argv"]]
    random.seed()
    import numpy as np
    import torch

    np.random.seed()
    if threads := os.environ.get("OMP_NUM_THREADS", "").strip():
        with contextlib.suppress(ValueError):
            torch.set_num_threads(int(threads))


def _work(request: dict, fds: Sequence[int]) -> None:
    """The worker: run the command, flush, exit with its status (never returns)."""
    code = 1
    try:
        _become_fresh(request, fds)
        from splicer.cli import main

        code = main(request["argv"], warm=False)
    except SystemExit as err:  # as the interpreter reports it: sys.exit("message") prints it and exits 1
        if err.code is None or isinstance(err.code, int):
            code = err.code or 0
        else:
            print(err.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # reported as a fresh process would report it
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _supervise(conn: socket.socket, request: dict, fds: Sequence[int]) -> None:
    """Fork the worker, pass the client's signals on to it, send back its exit status (never returns).

    The forwarded signals are blocked across the fork: one passed on at once waits for the worker's own
    dispositions. The supervisor ignores them (it follows its client through the socket, never through signals).
    Whatever ends the supervision early (the client gone, its socket reset, an error here) stops the worker first.
    """
    pid = 0
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _set_dispositions(request.get("ignored", []))
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            _work(request, fds)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        for fd in fds:
            os.close(fd)
        conn.sendall(f"P{pid}\n".encode())
        poller = select.poll()
        poller.register(conn, select.POLLIN)
        buf = bytearray()
        while True:
            done, wait = os.waitpid(pid, os.WNOHANG)
            if done:
                pid = 0
                with contextlib.suppress(OSError):
                    conn.sendall(f"X{os.waitstatus_to_exitcode(wait)}\n".encode())
                break
            if not poller.poll(50):
                continue
            chunk = conn.recv(64)
            if not chunk:
                break  # the client died: stop the job (below) as Snakemake would have
            buf.extend(chunk)
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                if line[:1] == b"S":
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(pid, int(line[1:]))
    except BaseException:  # whatever it was, the worker must not outlive its supervision
        pass
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)


# ------------------------------------------------------------------------------------------------- server


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request and its three file descriptors; ``ValueError`` (descriptors closed) when it is malformed."""
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    try:
        if len(head) != _HEADER.size or len(fds) != 3:
            raise ValueError("incomplete request")
        (size,) = _HEADER.unpack(head)
        payload = bytearray()
        while len(payload) < size:
            chunk = conn.recv(min(1 << 16, size - len(payload)))
            if not chunk:
                raise ValueError("truncated request")
            payload.extend(chunk)
        request = json.loads(payload)
        if not (
            isinstance(request, dict)
            and isinstance(request.get("argv"), list)
            and all(isinstance(a, str) for a in request["argv"])
            and isinstance(request.get("cwd"), str)
            and isinstance(request.get("env"), dict)
        ):
            raise ValueError("a request needs argv (strings), cwd and env")
        return request, list(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _refusal(request: dict) -> str | None:
    """Why the server must not run this job (a fresh process would differ), or ``None``."""
    if request.get("python") != _interpreter():
        return f"another interpreter {request.get('python')}"
    for name in THREAD_VARIABLES:
        if request["env"].get(name) != os.environ.get(name):
            return f"{name}={request['env'].get(name)!r} (the server's: {os.environ.get(name)!r})"
    return None


def _native_threads() -> int:
    """Threads of this process, native ones (OpenMP, BLAS pools) included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def serve(path: str, parent: int | None = None, idle: float = 3600.0) -> int:
    """Import :data:`PRELOAD`, listen on the UNIX socket ``path`` and fork a worker per request, until ``parent``
    (a pid) is gone, SIGTERM arrives or ``path`` is removed; without a ``parent``, also after ``idle`` seconds
    without a request."""
    import importlib

    started = time.perf_counter()
    for name in PRELOAD:
        importlib.import_module(name)
    if (threads := _native_threads()) != 1:  # forking a process with threads can deadlock its children
        print(f"splicer warm: {threads} threads after the imports; not serving", file=sys.stderr)
        return 1
    import torch

    if torch.cuda.is_initialized():  # a forked child cannot use CUDA initialised in its parent
        print("splicer warm: CUDA was initialised by the imports; not serving", file=sys.stderr)
        return 1
    stopping = False

    def stop_serving(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop_serving)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the jobs (their clients pass it on)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.settimeout(_POLL_S)
    inode = os.stat(path).st_ino
    print(f"splicer warm: serving on {path} after {time.perf_counter() - started:.1f} s of imports", flush=True)
    last, served = time.monotonic(), 0
    try:
        while not stopping:
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            if parent is not None and os.getppid() != parent:
                break
            try:
                if os.stat(path).st_ino != inode:
                    break
            except FileNotFoundError:
                break
            if parent is None and time.monotonic() - last > idle:  # with a parent, its end is the server's
                break
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            last = time.monotonic()
            try:
                conn.settimeout(10.0)
                request, fds = _receive(conn)
                conn.settimeout(None)
            except (OSError, ValueError) as err:
                print(f"splicer warm: bad request: {err}", file=sys.stderr, flush=True)
                conn.close()
                continue
            if why := _refusal(request):
                print(f"splicer warm: refused a job: {why}; it runs in its own process", flush=True)
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    conn.sendall(b"R\n")
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            if (pid := os.fork()) == 0:
                listener.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _supervise(conn, request, fds)
            for fd in fds:
                os.close(fd)
            conn.close()
            served += 1
            command = request["argv"][0] if request["argv"] else ""
            print(f"job {served}: splicer {command} in {request['cwd']} (supervisor {pid})", flush=True)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        if os.path.basename(os.path.dirname(path)).startswith("splicer-warm-"):  # the private directory of start()
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))
        print(f"splicer warm: stopped after {served} job(s)", flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- lifecycle


def wanted(enabled: bool, local_exec: bool) -> bool:
    """Whether a Snakemake run starts a server: ``warm_start`` set, jobs run on this machine, and not inside a SLURM
    job (where ``scancel`` and ``--signal`` are sent to every process of the step)."""
    return bool(enabled) and bool(local_exec) and "SLURM_JOB_ID" not in os.environ


@dataclass
class Server:
    """A started server: its process, socket path and private directory."""

    process: subprocess.Popen
    path: str
    directory: str


def start(log: str | os.PathLike, parent: int | None = None, threads: int | None = None) -> Server | None:
    """Start :func:`serve` in the background (its output to ``log``) on a socket in a private temporary directory,
    and export its path as ``SPLICER_WARM_SOCKET`` to this process's future children. Returns at once: jobs that
    start before the server has finished importing run in their own processes. ``None`` (with a warning on
    stderr) when it cannot start: every job then runs in its own process."""
    env = dict(os.environ)
    if threads is not None:  # as Snakemake sets them for a job with `threads`: such jobs are served
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    parent = os.getpid() if parent is None else parent
    try:
        directory = tempfile.mkdtemp(prefix="splicer-warm-")
        path = os.path.join(directory, "socket")
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "splicer.warm", path, "--parent", str(parent)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal goes to the jobs, which pass it on
            )
    except OSError as err:
        print(f"splicer warm: not started ({err}); every job runs in its own process", file=sys.stderr)
        return None
    os.environ[ENV] = path
    return Server(process, path, directory)


def stop(server: Server, timeout: float = 10.0) -> None:
    """Stop the server started by :func:`start` and remove its socket (running jobs finish on their own)."""
    if os.environ.get(ENV) == server.path:
        del os.environ[ENV]
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(server.path)
    with contextlib.suppress(OSError):
        os.rmdir(server.directory)


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m splicer.warm", description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", help="UNIX socket path to listen on")
    parser.add_argument("--parent", type=int, help="stop when the process with this pid is no longer the parent")
    parser.add_argument(
        "--idle", type=float, default=3600.0, help="without --parent: stop after this many idle seconds"
    )
    args = parser.parse_args(argv)
    return serve(args.socket, args.parent, args.idle)


if __name__ == "__main__":
    sys.exit(_main())
