"""The task registry and contract: every registered task exposes the contract, an unknown task is
named with the valid ones, and the commands that need a capability refuse tasks without it."""

import pytest

from equilibria.config import SECTIONS, Config, ConfigError
from equilibria.config.schema import DATASETS, DEQ_MODELS, MODELS, TASKS
from equilibria.data import DATASETS as IMAGE_DATASETS
from equilibria.models import ARCHITECTURES
from equilibria.tasks import CAPABILITIES, Task, get_task, task_for, tasks_with
from equilibria.tasks import TASKS as REGISTERED
from equilibria.training.loop import EpochLoop

CONTRACT = ("load_data", "build_model", "announce", "finalize", "headline")


@pytest.mark.parametrize("name", list(REGISTERED))
def test_each_registered_task_exposes_the_contract(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert issubclass(task.trainer, EpochLoop)
    assert all(callable(getattr(task, part)) for part in CONTRACT)
    assert task.noun and task.section in (None, *(s.name for s in SECTIONS))
    for capability in CAPABILITIES:
        assert getattr(task, capability) is None or callable(getattr(task, capability))
    assert task.folder_name(Config().override([f"run.task={name}"]))


def test_an_unknown_task_is_a_clear_error_naming_the_valid_ones():
    with pytest.raises(
        ConfigError, match="run.task='nope' is not valid; tasks are classify, lm, ssl"
    ):
        get_task("nope")
    with pytest.raises(ConfigError, match="run.task='nope' is not valid; choose one of classify"):
        Config().override(["run.task=nope"])


def test_names_have_one_source_each():
    assert tuple(REGISTERED) == TASKS
    assert tuple(ARCHITECTURES) == MODELS
    assert DEQ_MODELS == ("mdeq", "monotone")
    assert tuple(IMAGE_DATASETS) == DATASETS


def test_capabilities_are_found_by_asking_the_tasks():
    assert [t.name for t in tasks_with("evaluate")] == ["classify", "lm", "puzzles"]
    assert [t.name for t in tasks_with("solver_inputs")] == ["classify", "lm"]
    assert [t.name for t in tasks_with("sample")] == ["lm"]
    with pytest.raises(ConfigError, match="sample needs a language model"):
        task_for("run", "ssl", "sample", "sample")
    with pytest.raises(ValueError, match="unknown capability"):
        tasks_with("fly")


def test_the_model_says_whether_it_solves_for_an_equilibrium():
    classify, lm = get_task("classify"), get_task("lm")
    assert classify.describe_model(Config()) is None
    assert classify.describe_model(Config().override(["model.arch=resnet"])) == "an explicit resnet"
    assert lm.describe_model(Config().override(["run.task=lm"])) is None
    tied = Config().override(["run.task=lm", "lm.network=tied"])
    assert lm.describe_model(tied) == "an explicit transformer (lm.network=tied)"
