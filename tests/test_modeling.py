import os

import pytest
import torch

from lota.core.errors import UserError
from lota.core.modeling import set_threads


def test_set_threads_explicit_or_every_allowed_cpu():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == len(os.sched_getaffinity(0)) == torch.get_num_threads()
        with pytest.raises(UserError, match="threads must be >= 0"):
            set_threads(-1)
    finally:
        torch.set_num_threads(before)
