"""Shared test set-up."""

import pytest
import torch


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
