"""The cheap paths of a training step (issue 18) change nothing a user sees: the same logged
rows, the same clipping, the same results; the GPU flags run on the CPU."""

from __future__ import annotations

import csv
import os

import lightning as L
import pytest
import torch

from vae_zoo.errors import ConfigError
from vae_zoo.models.base import ELBOModule
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import build, train

from conftest import TINY_SPRITES

RUN = [*TINY_SPRITES, "test=false"]  # 8 training steps per epoch, 2 epochs


def metrics_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class PreStepGradNorms(L.Callback):
    """Records the total gradient norm that each optimizer step was given (after any clip), and
    the environment's NVML setting while the run trains."""

    def __init__(self):
        self.norms: list[float] = []
        self.nvml_check_during_fit: set[str | None] = set()

    def on_train_start(self, trainer, module):
        def record(optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(float(torch.nn.utils.get_total_norm(grads)))

        trainer.optimizers[0].register_step_post_hook(record)  # the gradients the step used

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.nvml_check_during_fit.add(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"))


def clock(result) -> PreStepGradNorms:
    return next(c for c in result.experiment.trainer.callbacks if isinstance(c, PreStepGradNorms))


CLOCK = ["+callbacks.grad_norms._target_=test_fast_paths.PreStepGradNorms"]


def test_self_log_only_on_steps_that_reach_the_logger_leaves_every_row_as_it_was(tmp_path, monkeypatch):
    args = [*RUN, "trainer.log_every_n_steps=3"]
    calls = []
    original = ELBOModule._log_terms
    monkeypatch.setattr(
        ELBOModule, "_log_terms", lambda self, *a, **k: (calls.append(self.global_step), original(self, *a, **k))
    )
    gated = train(compose_config(args, output_dir=tmp_path / "gated"))
    # logging steps 2, 5, 8, 11, 14 and each epoch's last batch (7, 15): 7 of the 16 steps
    assert calls == [2, 5, 7, 8, 11, 14, 15]
    monkeypatch.setattr(ELBOModule, "step_reaches_logger", lambda self: True)  # log every step, as before
    every = train(compose_config(args, output_dir=tmp_path / "every"))
    assert metrics_rows(tmp_path / "gated") == metrics_rows(tmp_path / "every")
    assert {row["step"] for row in metrics_rows(tmp_path / "gated") if row.get("train/loss")} == {
        "2",
        "5",
        "8",
        "11",
        "14",
    }
    # the final metrics a sweep reads still end with the last step's training terms
    assert gated.metrics == every.metrics and "train/loss" in gated.metrics


def test_a_run_shorter_than_the_logging_interval_still_reports_its_training_loss(tmp_path):
    result = train(compose_config([*RUN, "trainer.max_steps=3", "optimized_metric=train/loss"], output_dir=tmp_path))
    assert result.experiment.trainer.global_step == 3 and "train/loss" in result.metrics


def test_the_clip_holds_the_norm_the_optimizer_sees_and_the_log_shows_the_norm_before_it(tmp_path):
    clip = 0.5
    clipped = train(
        compose_config(
            [*RUN, *CLOCK, f"trainer.gradient_clip_val={clip}", "trainer.log_every_n_steps=1"],
            output_dir=tmp_path / "a",
        )
    )
    logged = [float(row["train/grad_norm"]) for row in metrics_rows(tmp_path / "a") if row.get("train/grad_norm")]
    assert len(logged) == 16 and min(logged) > clip  # these gradients are all larger than the clip
    assert clock(clipped).norms == pytest.approx([clip] * 16, rel=1e-4)

    unclipped = [
        *RUN,
        *CLOCK,
        "trainer.gradient_clip_val=null",
        "trainer.log_every_n_steps=1",
    ]  # the sprites clip at 50
    free = train(compose_config(unclipped, output_dir=tmp_path / "b"))
    logged = [float(row["train/grad_norm"]) for row in metrics_rows(tmp_path / "b") if row.get("train/grad_norm")]
    assert logged == pytest.approx(clock(free).norms, rel=1e-5)  # no clip: the step sees the logged norm


def test_a_large_clip_changes_nothing_and_matches_lightnings_own(tmp_path, monkeypatch):
    args = [*RUN, "trainer.gradient_clip_val=1e9", "trainer.max_epochs=1"]
    ours = train(compose_config(args, output_dir=tmp_path / "ours")).metrics
    monkeypatch.setattr(ELBOModule, "configure_gradient_clipping", L.LightningModule.configure_gradient_clipping)
    lightnings = train(compose_config(args, output_dir=tmp_path / "lightning")).metrics
    assert ours["val/elbo"] == pytest.approx(lightnings["val/elbo"], rel=1e-6)


def test_a_cpu_run_trains_without_the_nvml_gpu_check_and_gives_it_back(tmp_path):
    import lightning  # noqa: F401  (sets the variable)

    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
    result = train(compose_config([*RUN, *CLOCK, "trainer.max_epochs=1"], output_dir=tmp_path))
    assert clock(result).nvml_check_during_fit == {None}
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"


def test_the_default_optimizer_is_torchs_fused_adam(tmp_path):
    optimizer = build(compose_config(RUN, output_dir=tmp_path)).model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True


def test_an_optimizer_without_a_fused_kernel_gets_the_fix(tmp_path):
    cfg = compose_config([*RUN, "model.optimizer._target_=torch.optim.RMSprop"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"~model.optimizer.fused"):
        build(cfg).model.configure_optimizers()
    cfg = compose_config(
        [*RUN, "model.optimizer._target_=torch.optim.RMSprop", "~model.optimizer.fused"], output_dir=tmp_path
    )
    assert isinstance(build(cfg).model.configure_optimizers(), torch.optim.RMSprop)


def test_channels_last_keeps_the_results_and_stores_conv_weights_nhwc(tmp_path):
    args = [*RUN, "trainer.max_epochs=1"]
    nhwc = train(compose_config(args, output_dir=tmp_path / "nhwc"))  # the default
    conv = next(
        m for m in nhwc.experiment.model.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    nchw = train(compose_config([*args, "channels_last=false"], output_dir=tmp_path / "nchw"))
    assert nhwc.metrics["val/elbo"] == pytest.approx(nchw.metrics["val/elbo"], rel=1e-4)  # float rounding only


def test_gpu_flags_run_on_the_cpu(tmp_path):
    with pytest.warns(UserWarning, match="data.on_device=true is ignored"):
        result = train(
            compose_config(
                [*RUN, "trainer.max_epochs=1", "data.on_device=true", "trainer.precision=bf16-mixed"],
                output_dir=tmp_path / "a",
            )
        )
    assert torch.isfinite(torch.tensor(result.metrics["val/elbo"]))
    mlp = [arg for arg in RUN if not arg.startswith("model.encoder.")] + ["net=mlp", "model.encoder.hidden=[32]"]
    # no conv: nothing to convert
    train(compose_config([*mlp, "trainer.max_epochs=1", "channels_last=true"], output_dir=tmp_path / "b"))


KEEP_OR_NOT = """
import resource, sys, torch
from vae_zoo.run.cpu import keep_freed_memory
import ctypes, ctypes.util
# glibc's settings at a process's start, held fixed (it raises them by itself once a freed
# block lands above the threshold, at a moment that depends on what ran before)
ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, 128 * 1024)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults_of_a_step():  # a step's activations: many buffers alive at once, all freed at its end
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [torch.ones(2**21) for _ in range(16)]  # 16 x 8 MB: more than glibc's largest own trim threshold (64 MB)
    del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(sum([faults_of_a_step() for _ in range(10)][2:]))  # 8 steps, after two of warming up
"""


def test_keeping_freed_memory_stops_each_step_from_page_faulting_its_buffers_in_again():
    import subprocess
    import sys

    faults = {
        mode: int(
            subprocess.run([sys.executable, "-c", KEEP_OR_NOT, mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("keep", "default")
    }
    assert faults["default"] >= 8 * 16 * 2048  # every 8 MB buffer of every step mapped afresh, 4 KiB pages
    assert faults["keep"] <= 2048  # reused (at most one buffer mapped again)


def test_the_progress_bar_updates_when_a_redraw_is_due_and_at_each_epochs_last_batch(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    updates = []
    original = RichProgressBar.on_train_batch_end
    monkeypatch.setattr(
        RichProgressBar,
        "on_train_batch_end",
        lambda self, trainer, *args: (
            updates.append((trainer.current_epoch, args[-1])),
            original(self, trainer, *args),
        ),
    )
    args = [arg for arg in RUN if arg != "callbacks.progress_bar=null"] + ["callbacks.progress_bar.refresh_rate=1"]
    train(compose_config(args, output_dir=tmp_path))
    assert (0, 0) in updates and (0, 7) in updates and (1, 7) in updates  # first batch, each epoch's last
    assert len(updates) < 16  # not after every one of the 16 batches (tiny steps: far more than 1 a second)


FLUSH_OR_NOT = """
import sys, torch
from vae_zoo.run.cpu import use_cpu_settings
use_cpu_settings({"flush_denormal": sys.argv[1] == "on", "keep_freed_memory": True})
print(float(torch.tensor([1e-39]) * 1.0))  # a subnormal float32
"""


def test_a_runs_cpu_settings_flush_denormals_when_it_says_so():
    import subprocess
    import sys

    out = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", FLUSH_OR_NOT, mode], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("on", "off")
    }
    assert out["off"] > 0 and out["on"] == 0.0


class StepHooks(L.Callback):
    """Records, per training step, the step hooks Lightning calls on callbacks, in order."""

    def __init__(self):
        self.calls: list[str] = []

    def on_before_zero_grad(self, trainer, module, optimizer):
        self.calls.append("on_before_zero_grad")

    def on_before_backward(self, trainer, module, loss):
        self.calls.append("on_before_backward")

    def on_after_backward(self, trainer, module):
        self.calls.append("on_after_backward")

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.calls.append("on_before_optimizer_step")


HOOKS = ["+callbacks.step_hooks._target_=test_fast_paths.StepHooks"]


def test_the_models_own_step_trains_exactly_as_lightnings_automatic_loop(tmp_path, monkeypatch):
    # the sprites clip at 50 (the own step's clip path); every step logs, grad_norm included
    args = [*RUN, *CLOCK, *HOOKS, "trainer.log_every_n_steps=1", "trainer.gradient_clip_val=20"]
    own = train(compose_config(args, output_dir=tmp_path / "own"))
    model = own.experiment.model
    assert model.steps_its_own_optimizer and not model.automatic_optimization and model.gradient_clip == (20, "norm")
    monkeypatch.setattr(ELBOModule, "take_over_the_step", lambda self, **kwargs: False)
    automatic = train(compose_config(args, output_dir=tmp_path / "automatic"))
    assert automatic.experiment.model.automatic_optimization and automatic.experiment.trainer.gradient_clip_val == 20

    assert own.experiment.trainer.global_step == automatic.experiment.trainer.global_step == 16
    assert metrics_rows(tmp_path / "own") == metrics_rows(tmp_path / "automatic")  # every logged value, every step
    assert clock(own).norms == clock(automatic).norms and min(clock(own).norms) <= 20 + 1e-4  # the clip held
    logged = [float(r["train/grad_norm"]) for r in metrics_rows(tmp_path / "own") if r.get("train/grad_norm")]
    assert max(logged) > 20  # ... and it clipped
    hooks = ["on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step"]
    [own_hooks] = [c for c in own.experiment.trainer.callbacks if isinstance(c, StepHooks)]
    [automatic_hooks] = [c for c in automatic.experiment.trainer.callbacks if isinstance(c, StepHooks)]
    assert own_hooks.calls == automatic_hooks.calls == hooks * 16
    for (name, a), b in zip(model.state_dict().items(), automatic.experiment.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "setting",
    ["trainer.accumulate_grad_batches=2", "+model.lr_scheduler._target_=torch.optim.lr_scheduler.StepLR"],
)
def test_what_needs_lightnings_automatic_loop_keeps_it(setting, tmp_path):
    extra = (
        ["+model.lr_scheduler._partial_=true", "+model.lr_scheduler.step_size=1"] if "lr_scheduler" in setting else []
    )
    experiment = build(compose_config([*RUN, setting, *extra], output_dir=tmp_path))
    assert experiment.model.automatic_optimization and not experiment.model.steps_its_own_optimizer
    assert experiment.trainer.gradient_clip_val == 50 and experiment.model.gradient_clip is None


def test_a_run_saved_by_lightnings_automatic_loop_resumes_under_the_own_step_at_its_step(tmp_path, monkeypatch):
    """A checkpoint of a run saved before the model made its own step (or by a setting that keeps
    the automatic loop) counts its steps in the other progress tracker: it resumes at its step,
    with its warm-up where it was, and ends as an unbroken run does."""
    args = [*RUN, "kl_schedule=warmup", "model.kl_schedule.warmup_steps=20"]
    straight = train(compose_config([*args, "trainer.max_epochs=2"], output_dir=tmp_path / "straight"))
    with monkeypatch.context() as patch:
        patch.setattr(ELBOModule, "take_over_the_step", lambda self, **kwargs: False)
        train(compose_config([*args, "trainer.max_epochs=1"], output_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8
    resumed = train(
        compose_config([*args, "trainer.max_epochs=2", f"ckpt_path={last}"], output_dir=tmp_path / "resumed")
    )
    assert resumed.experiment.model.steps_its_own_optimizer
    assert resumed.experiment.trainer.global_step == 16
    rows = metrics_rows(tmp_path / "resumed")
    assert [r["train/beta"] for r in rows if r.get("train/beta")] == [
        r["train/beta"] for r in metrics_rows(tmp_path / "straight") if r.get("train/beta")
    ]  # the warm-up went on from step 8, as in the unbroken run
    assert resumed.metrics["val/elbo"] == pytest.approx(straight.metrics["val/elbo"], rel=1e-5)
