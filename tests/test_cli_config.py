"""The typed config: defaults, files, overrides, and errors that name the valid keys."""

import json

import pytest
from tiny_runs import tiny

import equilibria as eq
from equilibria.config import Config, ConfigError, all_keys, describe_keys, resolve_key
from equilibria.tasks.run import run_task


def test_defaults_round_trip_through_a_dict_and_a_file(tmp_path):
    config = Config()
    assert Config.from_dict(config.to_dict()) == config
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert Config.load(path) == config
    toml = tmp_path / "run.toml"
    toml.write_text("[model]\nchannels = [8, 16]\n[optim]\nlr = 0.01\nepochs = 3\n")
    loaded = Config.load(toml)
    assert loaded.model.channels == (8, 16) and loaded.optim.lr == 0.01
    assert loaded.optim.epochs == 3 and loaded.data == config.data


def test_overrides_parse_to_the_declared_types():
    config = Config().override(
        ["lr=2e-3", "model.channels=8,16", "deq.eval_max_iter=none", "flip=yes", "epochs=3"]
    )
    assert config.optim.lr == 0.002 and isinstance(config.optim.lr, float)
    assert config.model.channels == (8, 16)
    assert config.deq.eval_max_iter is None
    assert config.data.flip is True and config.optim.epochs == 3
    assert Config().changed_keys(config) == [
        "model.channels",
        "deq.eval_max_iter",
        "data.flip",
        "optim.lr",
        "optim.epochs",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.chanels=3", r"unknown config key 'model.chanels' \(did you mean 'model.channels'"),
        ("modle.channels=3", r"no section 'modle' \(did you mean 'model'\?\); sections are model"),
        ("lrr=1", r"unknown config key 'lrr' \(did you mean 'lr'\?\); valid keys are model.arch"),
        ("lr=fast", r"optim.lr='fast' is not valid: expected a number"),
        ("lr=0", r"optim.lr must be > 0.0"),
        ("epochs=2.5", r"optim.epochs='2.5' is not valid: expected an integer"),
        (
            "optimizer=lbfgs",
            r"optim.optimizer='lbfgs' is not valid; choose one of adam, adamw, sgd",
        ),
        ("deq.solver=secant", r"choose one of picard, anderson, broyden, newton, gmres"),
        ("weight_norm=maybe", r"model.weight_norm='maybe' is not valid: expected true/false"),
        ("model.groups=5", r"model.groups=5 must divide every entry of model.channels"),
        ("deq.iteration_jitter=8", r"must be smaller than deq.max_iter=8"),
        ("device=gpu", r"run.device='gpu' is not valid; use auto, cpu, cuda or cuda:N"),
        ("dropout=0.95", r"model.dropout must be <= 0.9"),
        ("epochs", r"override 'epochs' is not of the form key=value"),
    ],
)
def test_bad_overrides_are_errors_that_say_what_is_valid(override, message):
    with pytest.raises(ConfigError, match=message):
        Config().override([override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["deq.backward_max_iter=60"],
            r"deq.backward_max_iter=60 only applies with deq.backward=implicit, and this config "
            r"trains with deq.backward=onestep",
        ),
        (
            ["deq.backward=phantom", "deq.backward_solver=anderson", "deq.backward_tol=1e-05"],
            r"deq.backward_solver=anderson, deq.backward_tol=1e-05 only applies with "
            r"deq.backward=implicit.*leave them out",
        ),
        (["deq.phantom_tau=0.5"], r"deq.phantom_tau=0.5 only applies with deq.backward=phantom"),
    ],
)
def test_settings_of_another_gradient_are_refused_not_ignored(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config().override(overrides)
    backward = "phantom" if "phantom_tau" in overrides[0] else "implicit"
    settings = [o for o in overrides if not o.startswith("deq.backward=")]
    config = Config().override([f"deq.backward={backward}", *settings])
    assert config.deq.backward == backward


def test_each_task_trains_with_its_own_recipe_unless_the_config_says_otherwise():
    from equilibria.models import deq_options

    recipes = {"classify": (eq.OneStep, 8), "ssl": (eq.OneStep, 8), "lm": (eq.Implicit, 10)}
    for task, (gradient, cap) in recipes.items():
        config = Config().override([f"run.task={task}"])
        assert config.deq.backward is None and config.deq.max_iter is None
        assert config.deq.for_task(task).max_iter == cap
        options = deq_options(config)
        assert isinstance(options["backward"], gradient), task
        assert options["max_iter"] == cap, task
    given = Config().override(["run.task=lm", "deq.backward=onestep", "deq.max_iter=6"])
    options = deq_options(given)
    assert isinstance(options["backward"], eq.OneStep) and options["max_iter"] == 6
    # the language model's implicit gradient takes its settings; images' one-step one refuses them
    lm = Config().override(["run.task=lm", "deq.backward_max_iter=5"])
    assert deq_options(lm)["backward"].max_iter == 5
    with pytest.raises(ConfigError, match=r"run.task=classify's, as deq.backward is none"):
        Config().override(["deq.backward_max_iter=5"])
    with pytest.raises(ConfigError, match=r"trains with deq.backward=onestep; set"):
        Config().override(["run.task=lm", "deq.backward=onestep", "deq.backward_max_iter=5"])
    with pytest.raises(
        ConfigError, match=r"iteration_jitter=8 must be smaller than deq.max_iter=8"
    ):
        Config().override(["deq.iteration_jitter=8"])
    assert Config().override(["run.task=lm", "deq.iteration_jitter=8"]).deq.iteration_jitter == 8


def test_each_task_trains_on_its_own_batch_and_the_run_records_it(tmp_path):
    for task, batch in {"classify": 64, "ssl": 32, "lm": 32}.items():
        config = Config().override([f"run.task={task}"])
        assert config.data.batch_size is None
        resolved = config.for_task()
        assert resolved.data.batch_size == batch, task
        assert resolved.for_task() == resolved  # nothing left to fill in
        assert resolved.deq.backward == ("implicit" if task == "lm" else "onestep")
    assert Config().override(["data.batch_size=16"]).for_task().data.batch_size == 16
    # a run trains with, and writes to config.json, the task's batch: 128 samples, 2 steps
    overrides = tiny("optim.epochs=1", "data.train_samples=128")
    without_batch = [o for o in overrides if "batch" not in o]
    result = run_task(Config().override(without_batch), tmp_path / "run", log=lambda _: None)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["data"]["batch_size"] == 64 and written["deq"]["max_iter"] == 8
    assert result.summary["steps"] == 2


def test_files_with_unknown_sections_or_keys_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key model.chanels .*valid keys in"):
        Config.from_dict({"model": {"chanels": [4]}})
    with pytest.raises(ConfigError, match="unknown config section 'optimiser'"):
        Config.from_dict({"optimiser": {}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        Config.load(bad)
    with pytest.raises(ConfigError, match="must end in .json or .toml"):
        Config.load(tmp_path / "x.yaml") if (tmp_path / "x.yaml").write_text("a") else None
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "missing.json")


def test_bare_keys_resolve_only_when_unambiguous():
    assert resolve_key("lr") == ("optim", "lr")
    assert resolve_key("deq.tol") == ("deq", "tol")
    assert len(all_keys()) == len(set(all_keys()))
    assert all(key in describe_keys() for key in ("channels", "eval_max_iter", "sweep"))


def test_every_task_the_config_accepts_has_a_trainer_and_no_other():
    from equilibria.config.schema import TASKS
    from equilibria.tasks import TASKS as TASK_MODULES
    from equilibria.tasks import get_task
    from equilibria.training.loop import EpochLoop

    assert tuple(TASK_MODULES) == TASKS
    for task in TASK_MODULES:
        assert issubclass(get_task(task).trainer, EpochLoop)
    with pytest.raises(ConfigError, match="run.task='nope' is not valid; tasks are classify"):
        get_task("nope")
