"""Shared test set-up."""

import pytest
import torch

# The longest test files (measured with --durations on the 2-core CI machine: the SLURM profile runs ~250 s, the
# tiny end-to-end run ~180 s, then the real-format and MCMICRO workflows). pyproject runs the suite on two xdist
# workers, one file per worker at a time (--dist loadfile, module fixtures stay shared); collecting these first
# lets the two longest start at once on different workers instead of ending the run alone.
LONGEST_FIRST = (
    "test_slurm.py",
    "test_workflow.py",
    "test_workflow_real.py",
    "test_workflow_mcmicro.py",
    "test_extending.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable sort: the files of LONGEST_FIRST in that order, then every other test in collection order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests use tiny tensors: one intra-op thread is faster, and far faster on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def server():
    """A loopback HTTP server (tests/loopback.py): add ``Route``s to ``server.routes``; stopped afterwards."""
    from loopback import serving

    with serving() as state:
        yield state
