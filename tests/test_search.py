"""The Optuna search (vae_zoo/run/search.py): one study in a journal file shared by processes, a
killed search resumes with its finished trials, a pruned trial is recorded as pruned.

Each search here is the real command, ``python -m vae_zoo.train hparams_search=optuna ...``, on
tiny sprites; the study is read back from its journal file with Optuna."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from vae_zoo.callbacks.optuna_pruning import ALIVE_AT, open_storage
from vae_zoo.errors import ConfigError
from vae_zoo.evaluation.runner import evaluate
from vae_zoo.run.run_config import compose_run_config
from vae_zoo.run.search import (
    OptunaSearch,
    distribution,
    fail_abandoned_trials,
    load_study,
    search_fingerprint,
    search_space,
)

from conftest import TINY_SPRITES, cli_command, run_cli

TINY_NET = ["model.encoder.hidden_channels=[8,8,8]", "model.encoder.fc_features=32"]  # latent_dim is searched
SEARCH = [
    "hparams_search=optuna",
    "hydra.sweeper.sampler.n_startup_trials=1",
    *(o for o in TINY_SPRITES if not o.startswith("model.latent_dim")),
    *TINY_NET,
    "trainer.max_epochs=1",
]


def journal(tmp_path: Path, study: str) -> Path:
    return tmp_path / "logs" / "optuna" / f"{study}.journal"  # the default: <log_dir>/optuna/<study>.journal


def search_command(tmp_path: Path, *args: str) -> tuple[list[str], dict]:
    return cli_command([*SEARCH, *args], tmp_path)


def test_search_space_grammar_gives_optuna_distributions():
    parse = OverridesParser.create().parse_override
    assert distribution(parse("a=interval(0.5, 8.0)")) == FloatDistribution(0.5, 8.0)
    assert distribution(parse("a=tag(log, interval(1e-4, 3e-3))")) == FloatDistribution(1e-4, 3e-3, log=True)
    assert distribution(parse("a=int(interval(2, 9))")) == IntDistribution(2, 9)  # Hydra: a plain interval is of floats
    assert distribution(parse("a=choice(4, 8, 16)")) == CategoricalDistribution([4, 8, 16])
    assert distribution(parse("a=range(1, 7, 2)")) == IntDistribution(1, 5, step=2)
    assert distribution(parse("a=range(1, 6, 2)")) == IntDistribution(1, 5, step=2)  # stop excluded: 1, 3, 5
    space, fixed = search_space(
        {"model.beta": "interval(1, 4.0)"}, ["data.batch_size=16", "model.latent_dim=choice(2,3)"]
    )
    assert set(space) == {"model.beta", "model.latent_dim"} and fixed == {"data.batch_size": "16"}


def test_a_study_refuses_another_search_under_its_name(tmp_path):
    storage = str(tmp_path / "study.journal")
    settings = dict(
        study_name="s",
        storage=storage,
        direction="maximize",
        n_trials=1,
        n_jobs=1,
        sampler=None,
        pruner=None,
        params=None,
        max_failure_rate=0.0,
    )
    space, fixed = search_space({"model.beta": "interval(1, 4.0)"}, [])
    OptunaSearch(**settings).open_study(search_fingerprint(space, fixed, "maximize"))
    OptunaSearch(**settings).open_study(search_fingerprint(space, fixed, "maximize"))  # the same search: resumes
    other, _ = search_space({"model.beta": "interval(1, 16.0)"}, [])
    with pytest.raises(ConfigError, match="hydra.sweeper.study_name=<name>"):
        OptunaSearch(**settings).open_study(search_fingerprint(other, fixed, "maximize"))


def wait_for(condition, what: str, processes, timeout_s: float = 240):
    """Poll ``condition()`` until it is true; fail, with the processes' errors, if one ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a search ended (status {process.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_two_processes_run_trials_of_one_study_in_one_journal(tmp_path):
    """Two processes, one study of two trials: each runs one. Which process asks first is set,
    not left to a race: the first is paused (SIGSTOP) while its trial trains, outside the
    journal's lock, until the second has asked for its own trial."""
    command, env = search_command(
        tmp_path, "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=2", "trainer.max_epochs=2"
    )
    storage = journal(tmp_path, "shared")
    lock = storage.with_name(storage.name + ".lock")  # Optuna's JournalFileSymlinkLock

    def study_trials():
        try:
            return load_study(str(storage), "shared").get_trials()
        except KeyError:  # no study in the journal yet
            return []

    logs = [open(tmp_path / f"search{i}.err", "w") for i in range(2)]  # files, not pipes: a full pipe blocks a search
    start = lambda log: subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
    first = start(logs[0])
    processes = [first]
    try:
        wait_for(lambda: any(ALIVE_AT in t.user_attrs for t in study_trials()), "the first trial trained", processes)
        while True:  # pause it where it holds no lock on the journal
            first.send_signal(signal.SIGSTOP)
            if not lock.exists():
                break
            first.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        processes.append(start(logs[1]))
        wait_for(lambda: len(study_trials()) == 2, "the second process asked for a trial", processes[1:])
    finally:
        first.send_signal(signal.SIGCONT)
    for process in processes:
        process.wait(timeout=300)
    errors = [(tmp_path / f"search{i}.err").read_text()[-2000:] for i in range(2)]
    assert [process.returncode for process in processes] == [0, 0], errors
    trials = load_study(str(storage), "shared").get_trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    # one trial from each process, each run in its own folder, named by the trial's number
    assert [trial.user_attrs["search_process"]["pid"] for trial in trials] == [p.pid for p in processes]
    # each run's heartbeat
    assert all(trial.user_attrs[ALIVE_AT] >= trial.datetime_start.timestamp() for trial in trials)
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.name == str(trial.number) and (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_a_killed_search_resumes_with_its_finished_trials(tmp_path):
    storage = journal(tmp_path, "resumed")
    command, env = search_command(tmp_path, "hydra.sweeper.study_name=resumed", "hydra.sweeper.n_trials=3")
    errors = open(tmp_path / "search.err", "w")  # a file, not a pipe: a full pipe would block the search
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # kill it while its second trial runs
        try:
            trials = load_study(str(storage), "resumed").get_trials()
        except KeyError:  # the journal holds no study yet
            trials = []
        if [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.RUNNING]:
            break
        if process.poll() is not None:
            pytest.fail(
                f"the search ended (status {process.returncode}) before its second trial: {(tmp_path / 'search.err').read_text()[-3000:]}"
            )
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the search never reached its second trial")
    process.send_signal(signal.SIGKILL)
    process.wait()
    errors.close()
    [first, _] = load_study(str(storage), "resumed").get_trials()

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_study(str(storage), "resumed").get_trials()
    kept = (trials[0].state, trials[0].value, trials[0].params)
    assert kept == (TrialState.COMPLETE, first.value, first.params)  # as it was before the kill
    assert trials[1].state == TrialState.FAIL  # left running by the killed process
    assert [trial.state for trial in trials[2:]] == [TrialState.COMPLETE, TrialState.COMPLETE]  # 3 complete, as asked
    assert "marked failed" in result.stdout + result.stderr
    [sweep] = [
        path
        for path in (tmp_path / "logs" / "train" / "multiruns").iterdir()
        if (path / "optimization_results.yaml").exists()
    ]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 3, "pruned": 0, "fail": 1}
    assert results["best_value"] == max(trial.value for trial in trials if trial.state == TrialState.COMPLETE)


def test_a_pruned_trial_is_recorded_as_pruned_and_its_run_folder_is_whole(tmp_path):
    # a pruner that prunes every trial whose val/elbo is below 0 nats: all of them, after the first epoch
    result = run_cli(
        [
            *SEARCH,
            "hydra.sweeper.study_name=pruned",
            "hydra.sweeper.n_trials=1",
            "trainer.max_epochs=3",
            "~hydra.sweeper.pruner",
            "+hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 0.0}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [trial] = load_study(str(journal(tmp_path, "pruned")), "pruned").get_trials()
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    run_dir = Path(trial.user_attrs["run_dir"])
    with open(run_dir / "csv" / "metrics.csv") as f:
        epochs = {row.split(",")[0] for row in f.read().splitlines()[1:] if row}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "config.yaml").is_file()
    assert "Pruned by the study's pruner after epoch 0" in (run_dir / "train.log").read_text()
    assert epochs  # the history of the epoch it ran
    # its run folder evaluates as any run's: the pruning callback and its pruner in config.yaml are trusted
    drop = [
        f"metrics.{name}=null" for name in ("nll", "active_units", "codebook_usage", "fid", "disentanglement", "ood")
    ]
    report = evaluate(compose_run_config(run_dir, drop, output_dir=tmp_path / "evaluation"))
    assert report.values()["elbo"] < 0
    [sweep] = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["trials"] == {
        "complete": 0,
        "pruned": 1,
        "fail": 0,
    }
    assert int(optuna.__version__.split(".")[0]) >= 4


def test_an_rdb_url_holds_the_study_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = run_cli(
        [*SEARCH, "hydra.sweeper.study_name=in_sqlite", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={url}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [trial] = load_study(url, "in_sqlite").get_trials()
    assert trial.state == TrialState.COMPLETE and not journal(tmp_path, "in_sqlite").exists()


@pytest.mark.slow
def test_a_trial_under_ddp_runs_the_trial_in_every_rank_not_a_search(tmp_path):
    """Lightning starts the second rank by running the command again; the trial's config holds
    hydra.mode=MULTIRUN (hparams_search=optuna), which would start a search in that rank."""
    args = [*SEARCH, "hydra.sweeper.study_name=ddp", "hydra.sweeper.n_trials=1", "trainer=ddp_cpu"]
    result = run_cli(args, cwd=tmp_path, timeout=300, process=True)  # the second rank re-runs the command
    assert result.returncode == 0, result.stderr[-3000:]
    [trial] = load_study(str(journal(tmp_path, "ddp")), "ddp").get_trials()
    assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [0]


def test_a_trial_whose_run_fell_silent_on_another_machine_is_failed(tmp_path):
    """The heartbeat: a running trial of another machine whose run last said it was alive 40
    minutes ago is failed; one that said so a minute ago, or whose run has not started, is not."""
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "s.journal")))
    trials = [study.ask() for _ in range(3)]
    for trial, alive_at in zip(trials, (time.time() - 40 * 60, time.time() - 60, None)):
        trial.set_user_attr("search_process", {"host": "another-machine", "pid": 1})
        if alive_at is not None:
            trial.set_user_attr(ALIVE_AT, alive_at)
    assert fail_abandoned_trials(study, stale_after_s=30 * 60) == [0]
    assert [trial.state for trial in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
