import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# the tests' models are tiny: one thread is as fast, and it does not stall when other jobs
# share the cores (several threads then wait for each other at every operation)
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
