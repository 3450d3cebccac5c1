"""Helpers for the Snakemake script adapters: send a job's output and logging to the rule's log file."""

import contextlib
import logging
import sys


@contextlib.contextmanager
def logged(snakemake):
    """Redirect output of the block to ``snakemake.log[0]`` (when the rule has a log)."""
    if not snakemake.log:
        yield
        return
    with open(snakemake.log[0], "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        logging.basicConfig(stream=fh, level=logging.INFO, force=True)
        try:
            yield
        except Exception:
            import traceback

            traceback.print_exc(file=fh)
            raise
    sys.stdout.flush()
