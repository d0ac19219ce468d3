"""The README's Python examples run as written (in order, sharing one namespace, as a reader
would paste them), with only the names the text says come from elsewhere defined first."""

import os
import re
import warnings
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def eq_warning() -> type[Warning]:
    from equilibria.errors import ConvergenceWarning

    return ConvergenceWarning


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples():
    assert len(python_blocks()) >= 6


def test_every_readme_example_runs(tmp_path):
    # the names the README says the reader brings: a batch of digit-sized images and a list
    # of DEQ inputs for the learned-solver example
    namespace = {"images": torch.randn(4, 1, 8, 8)}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # examples that save files write here
    try:
        for index, block in enumerate(python_blocks()):
            if "batches[0]" in block:
                namespace["batches"] = [torch.randn(16, 64) for _ in range(2)]
                namespace["x"] = torch.randn(16, 64)
                namespace["deq"] = namespace["eq"].DEQ(
                    namespace["TanhCell"](64, contraction=0.9), tol=1e-4, max_iter=30
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    exec(compile(block, f"README.md python block {index}", "exec"), namespace)
                except Exception as error:  # noqa: BLE001 - report which example failed
                    pytest.fail(f"README python block {index} failed: {error!r}\n{block}")
            # a newcomer who runs an example sees no warning
            said = [
                str(w.message)
                for w in caught
                if "equilibria" in w.filename or issubclass(w.category, eq_warning())
            ]
            assert not said, f"README python block {index} warns: {said}\n{block}"
    finally:
        os.chdir(cwd)
