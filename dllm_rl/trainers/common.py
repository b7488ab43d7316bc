"""What every trainer's loop shares: the session (processes, engine, model, optimizer, run
directory, metrics, checkpoints), the seeded data order, and the cross-process sums.

Gradients go through the engine the launch chose (:mod:`dllm_rl.run.engine`: plain, DDP,
DeepSpeed ZeRO-2/3, FSDP2). Every trainer weighs its losses with the step's global normaliser and
hands them to :func:`run_calls`, which makes the same number of forward/backward calls on every
process; the engine turns them into the gradient of the whole step's loss, whatever the split
into micro-batches and processes.

Robustness lives here too, so every trainer gets it by using the loop:

* **exact resume**: a checkpoint holds weights, optimizer, schedule, every process's global
  random states (the trainers' own draws come from generators seeded per step: nothing else to
  keep), the data position, the skipped-update counters and the metric history; the random states are restored just before the first resumed step, and the run
  directory's ``metrics.jsonl``/``samples.jsonl`` lose the rows logged after the checkpoint.
* **preemption**: SIGTERM (or a first SIGINT) lets the current step finish, then the loop writes a
  checkpoint and raises :class:`Preempted` (``train.py`` exits with :data:`EXIT_PREEMPTED`).
* **non-finite guard**: a non-finite loss or gradient norm skips the update; more than
  ``run.max_bad_steps`` such steps in a row raise :class:`Diverged` after a checkpoint.
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.run.build import (
    Reference,
    derive_seed,
    load_policy,
    make_adamw,
    make_reference,
    make_scheduler,
)
from dllm_rl.run.checkpoint import (
    TrainerState,
    begin_checkpoint,
    commit_checkpoint,
    load_checkpoint,
    load_model_weights,
    load_rng,
    resolve_checkpoint,
    restore_rng,
    rng_state,
    staging_folder,
)
from dllm_rl.run.cli import to_dict
from dllm_rl.run.engine import (
    Engine,
    EngineSpec,
    LaunchError,
    build_engine,
    engine_spec,
    make_accelerator,
)
from dllm_rl.run.metrics import MetricsLogger, truncate_after
from dllm_rl.run.rundir import (
    RunDir,
    agree_on_output_dir,
    check_output_dir,
    create_run_dir,
    wipe_run,
)
from dllm_rl.trainers.grpo_config import GRPOConfig
from dllm_rl.trainers.preference_config import PreferenceConfig
from dllm_rl.trainers.sft_config import SFTConfig

TrainerConfig = GRPOConfig | SFTConfig | PreferenceConfig
"""The config of any trainer: each has ``run``, ``model`` and ``training`` sections."""

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data order
class PromptOrder:
    """A seeded shuffle of ``n`` rows that wraps into new epochs; its state is one integer.

    ``take(k)`` returns the next k row indices; epoch e is ``randperm(n)`` from a generator seeded
    by ``(seed, "data", e)``, so the order is the same on every process and after a resume.
    """

    def __init__(self, n: int, seed: int, position: int = 0) -> None:
        if n < 1:
            raise ValueError("the dataset is empty: no prompts to train on")
        self.n, self.seed, self.position = n, seed, position
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}
        return self._perms[epoch]

    def take(self, k: int) -> list[int]:
        out = []
        for i in range(self.position, self.position + k):
            out.append(self._perm(i // self.n)[i % self.n])
        self.position += k
        return out


# ----------------------------------------------------------------------------- processes
def all_reduce_sum(session: Session, x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over processes (``x`` itself with one process)."""
    if session.world_size == 1:
        return x
    import torch.distributed as dist

    y = x.to(session.device).clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y.to(x.device)


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of process ``rank``: contiguous, disjoint, covering ``range(n)`` once.

    The first ``n % world_size`` processes take one row more (no padding with duplicates):
    n = 10 over 4 processes gives [0, 3), [3, 6), [6, 8), [8, 10).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def agree_max(session: Session, n: int) -> int:
    """The largest ``n`` over processes."""
    if session.world_size == 1:
        return n
    import torch.distributed as dist

    y = torch.tensor([n], dtype=torch.long, device=session.device)
    dist.all_reduce(y, op=dist.ReduceOp.MAX)
    return int(y.item())


def run_calls(
    session: Session,
    calls: Sequence[Callable[[], torch.Tensor]],
    padding: Callable[[], Sequence[Callable[[], torch.Tensor]]],
) -> int:
    """Back-propagate every call's loss through the engine, as many calls on every process.

    Each call runs its forward(s) and returns its share of the step's loss (with the global
    normaliser). The processes agree on the largest call count; one with fewer calls pads with
    ``padding()``'s calls (zero-weighted: their gradient is exactly zero), repeated as needed.
    Engines that shard parameters communicate in every forward, so a trainer gives them calls of
    one shape (padding included); the step's last call is flagged to the engine (DDP reduces
    there).

    Returns:
        The number of padding calls this process made.
    """
    n = agree_max(session, len(calls))
    todo = list(calls)
    while len(todo) < n:
        extra = list(padding())
        if not extra:
            raise RuntimeError("run_calls: the padding gives no call")
        todo.extend(extra)
    for i, call in enumerate(todo[:n]):
        with session.engine.micro_step(last=i == n - 1):
            session.backward(call())
    return n - len(calls)


def gather_rows(session: Session, x: torch.Tensor, pad: bool = False) -> torch.Tensor:
    """Rows of every process concatenated in rank order (``pad``: different row counts)."""
    if session.world_size == 1:
        return x
    if pad:
        return _gather_padded(session, x)
    return session.accelerator.gather(x.contiguous())


def _gather_padded(session: Session, x: torch.Tensor) -> torch.Tensor:
    counts = session.accelerator.gather(torch.tensor([x.shape[0]], device=x.device))
    width = int(counts.max())
    padded = torch.full((width, *x.shape[1:]), math.nan, dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    every = session.accelerator.gather(padded.contiguous())
    return torch.cat([every[r * width : r * width + int(c)] for r, c in enumerate(counts)])


# ----------------------------------------------------------------------------- stopping a run
EXIT_PREEMPTED = 75
"""Exit status after a signal-triggered checkpoint (``EX_TEMPFAIL``: run the same command with
``resume_from=latest`` to continue)."""
EXIT_DIVERGED = 3
"""Exit status after too many non-finite steps in a row."""


class RunStopped(RuntimeError):
    """The loop stopped before ``max_steps`` on purpose; ``str()`` says why and what to do."""

    exit_code = 1

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


class Preempted(RunStopped):
    """SIGTERM/SIGINT: the last step finished, a checkpoint was written."""

    exit_code = EXIT_PREEMPTED


class Diverged(RunStopped):
    """More than ``run.max_bad_steps`` steps in a row skipped their update."""

    exit_code = EXIT_DIVERGED


class StopSignals:
    """Within the block, SIGTERM and a first SIGINT only set :attr:`received` (a second SIGINT
    interrupts at once, as usual). Off the main thread it installs nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = name
        logger.warning(
            "%s received: the current step finishes, then a checkpoint is written and the run "
            "stops%s",
            name,
            " (Ctrl-C again to abort without a checkpoint)" if signum == signal.SIGINT else "",
        )

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def check_launch(env: dict[str, str] | None = None) -> EngineSpec:
    """The engine the launch asks for, checked before anything loads.

    Raises:
        LaunchError: a launch mode without tests behind it, named, with what to use instead.
    """
    return engine_spec(env)


# ----------------------------------------------------------------------------- the session
@dataclass
class Session:
    """One process's share of a run: model, optimizer, schedule, run directory, metrics."""

    accelerator: Any
    policy: DiffusionLM
    optimizer: torch.optim.Optimizer
    scheduler: Any
    run: RunDir
    config: TrainerConfig
    metrics: MetricsLogger | None = None
    state: TrainerState = field(default_factory=TrainerState)
    skipped_updates: int = 0
    bad_steps_in_a_row: int = 0
    last_good_step: int = 0
    recipe: str = ""
    argv: list[str] = field(default_factory=list)
    resumed_from: Path | None = None
    engine: Engine | None = None
    reference: Reference | None = None
    _bad_loss: bool = False

    def __post_init__(self) -> None:
        if self.engine is None:  # a session built by hand (benchmarks): one process, plain
            self.engine = build_engine(EngineSpec("plain"), self.accelerator)
            limit = self.config.training.max_grad_norm
            self.engine.prepare(self.policy, lambda model: self.optimizer, limit)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def trainable(self) -> list[torch.nn.Parameter]:
        return self.engine.trainable()

    def full_parameters(self) -> Any:
        """Context for forwards whose count may differ across processes (rollouts, evaluation,
        no-grad log-prob passes): every process holds the full parameters within it."""
        return self.engine.full_parameters()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``d loss`` (already weighted by the global normaliser) through the engine.

        A non-finite loss is still back-propagated, as NaN (every process must make the same
        calls): the gradient norm is then NaN on every process and :meth:`optimizer_step`
        skips the update everywhere.
        """
        if not bool(torch.isfinite(loss.detach()).all()):
            if not self._bad_loss:
                logger.warning(
                    "step %d: non-finite loss (%s)", self.state.step + 1, float(loss.detach())
                )
            self._bad_loss = True
            loss = loss * math.nan  # NaN gradients whatever made the loss infinite
        self.engine.backward(loss)

    def optimizer_step(self) -> float:
        """Clip and step through the engine; returns the pre-clip gradient norm of the summed
        gradient.

        A non-finite loss on any process (seen by :meth:`backward`) or a non-finite gradient norm
        skips the update on every process (counted in ``skipped_updates``); the returned norm is
        then NaN for a bad loss. The schedule advances either way.
        """
        bad = self._bad_loss
        self._bad_loss = False
        if self.world_size > 1:
            bad = agree_max(self, int(bad)) > 0
        norm = self.engine.step(bad)
        if not math.isfinite(norm):
            self.skipped_updates += 1
            logger.warning(
                "step %d: %s: update skipped (%d skipped so far)",
                self.state.step + 1,
                "non-finite loss" if bad else f"non-finite gradient norm ({norm})",
                self.skipped_updates,
            )
        self.scheduler.step()
        return norm

    # ------------------------------------------------------------------ random states
    def restore_random_states(self) -> None:
        """Set this process's random states from the checkpoint the run resumed from."""
        if self.resumed_from is not None:
            restore_rng(load_rng(self.resumed_from, self.rank), {})

    def finish_resume(self) -> None:
        """Restore the random states of the checkpoint the run resumed from (the loop calls
        this just before its first step, so whatever the trainer drew while building does not
        matter)."""
        self.restore_random_states()

    # ------------------------------------------------------------------ checkpoints
    def _every_rng(self) -> dict[str, Any]:
        mine = rng_state({})  # the trainers' own generators are seeded per step: none to keep
        if self.world_size == 1:
            return {"ranks": [mine]}
        from accelerate.utils import gather_object

        return {"ranks": list(gather_object([mine]))}

    def save(self) -> Path | None:
        """A checkpoint of the current state: the main process writes the consolidated weights,
        schedule and states, every process its share of a sharded engine's state; all wait."""
        self.state.extra.update(
            skipped_updates=self.skipped_updates,
            bad_steps_in_a_row=self.bad_steps_in_a_row,
            last_good_step=self.last_good_step,
            engine=self.engine.name,
            processes=self.world_size,
        )
        rng = self._every_rng()  # collective: every process takes part
        weights = self.engine.model_state_dict()  # collective for sharded engines
        own = self.engine.saves_own_state
        root = self.run.checkpoints
        if self.is_main:
            begin_checkpoint(
                root,
                self.state,
                model=self.policy.model,
                model_state=weights,
                optimizer=None if own else self.optimizer,
                scheduler=self.scheduler,
                tokenizer=self.policy.tokenizer,
                rng=rng,
                metrics_file=self.run.metrics,
            )
        self.accelerator.wait_for_everyone()
        if own:
            self.engine.save_state(staging_folder(root, self.state.step) / "engine")
            self.accelerator.wait_for_everyone()
        path = None
        if self.is_main:
            path = commit_checkpoint(root, self.state.step, self.config.run.save_total_limit)
            logger.info("checkpoint: %s", path)
        self.accelerator.wait_for_everyone()
        return path

    def resume_command(self) -> str:
        """The command that continues this run from its latest checkpoint."""
        drop = ("resume_from=", "run.resume_from=", "output_dir=", "run.output_dir=")
        args = [a for a in self.argv if not a.startswith(drop)]
        if not any(a.startswith("recipe=") for a in args) and self.recipe:
            args.insert(0, f"recipe={self.recipe}")
        launcher = (
            ["python", "-m", "dllm_rl.train"]
            if self.world_size == 1
            else ["accelerate", "launch", "<same launch options>", "dllm_rl/train.py"]
        )
        rest = ["resume_from=latest", f"output_dir={self.run.root}"]
        return shlex.join([*launcher, *args, *rest]).replace("'<same launch options>'", "...")


def _restore_run_files(session: Session, path: Path) -> None:
    """Drop rows logged after the checkpoint; bring the checkpoint's metric history into a new
    run directory (main process)."""
    step = session.state.step
    metrics = session.run.metrics
    if not metrics.is_file() and (path / "metrics.jsonl").is_file():
        metrics.write_text((path / "metrics.jsonl").read_text())
    for f in (metrics, session.run.samples):
        dropped = truncate_after(f, step)
        if dropped:
            logger.info("%s: dropped %d row(s) logged after step %d", f.name, dropped, step)


def start_session(
    config: TrainerConfig,
    recipe: str,
    argv: list[str],
    updates_per_step: int = 1,
    needs_reference: bool = False,
) -> Session:
    """Processes, engine, run directory, policy (and reference), optimizer and schedule;
    resumes when asked.

    Args:
        config: a trainer config with ``run``, ``model`` and ``training`` sections.
        recipe: the recipe name (default output folder).
        argv: the command line (written to ``command.txt``).
        updates_per_step: optimizer steps per training step (the schedule's length is
            ``max_steps * updates_per_step``).
        needs_reference: build the reference policy (``session.reference``): the PEFT model
            with adapters disabled, or a frozen copy made before the engine shards the policy.

    Raises:
        LaunchError: a launch mode the loop does not support (:func:`check_launch`), or a
            checkpoint written under another engine.
        FileNotFoundError: ``resume_from`` names no checkpoint.
    """
    spec = check_launch()
    run = config.run
    accelerator = make_accelerator(spec, run.device)
    if accelerator.num_processes != spec.world_size:
        raise RuntimeError(
            f"WORLD_SIZE={spec.world_size} but accelerate started {accelerator.num_processes}"
        )
    if getattr(accelerator, "mixed_precision", "no") != "no":
        logger.warning(
            "accelerate mixed_precision=%s is ignored: the parameters' dtype is model.dtype "
            "(auto: bfloat16 on GPU/NPU)",
            accelerator.mixed_precision,
        )
    torch.manual_seed(derive_seed(run.seed, "init") % (2**31))  # LoRA init; same on every rank
    root = agree_on_output_dir(run.output_dir, recipe, accelerator)
    run.output_dir = root
    rundir = RunDir(Path(root))
    resume = None
    if run.resume_from:  # resolved before anything loads, so a wrong path fails at once
        resume = resolve_checkpoint(run.resume_from, rundir.checkpoints)
        check_same_engine(resume, spec)
    wipe = check_output_dir(rundir.root, resume is not None, run.overwrite)
    accelerator.wait_for_everyone()  # every rank has looked before the main one wipes
    if accelerator.is_main_process:
        if wipe:
            logger.warning("run.overwrite=true: deleting the run in %s", rundir.root)
            wipe_run(rundir.root)
        rundir = create_run_dir(root, config, argv, accelerator.num_processes)
        logger.info("run directory: %s", Path(root).resolve())
    accelerator.wait_for_everyone()
    policy = load_policy(config.model, accelerator.device)
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        for p in policy.model.parameters():
            if p.requires_grad:
                dist.broadcast(p.data, src=0)
    # Before the engine: a frozen copy cannot be made of ZeRO-3/FSDP2 shards, and on resume the
    # reference is the initial model, not the checkpoint's weights.
    reference = make_reference(policy, needs_reference)
    engine = build_engine(spec, accelerator)
    training = config.training
    optimizer = engine.prepare(
        policy, lambda model: make_adamw(model, training), training.max_grad_norm
    )
    scheduler = make_scheduler(optimizer, training, run.max_steps * updates_per_step)
    logger.info("engine: %s", spec.describe)
    session = Session(
        accelerator,
        policy,
        optimizer,
        scheduler,
        rundir,
        config,
        recipe=recipe,
        argv=list(argv),
        engine=engine,
        reference=reference,
    )
    if resume is not None:
        _resume(session, resume)
    session.metrics = MetricsLogger(
        rundir.root,
        run.max_steps,
        is_main=accelerator.is_main_process,
        report_to=run.report_to,
        config=to_dict(config),
        project=run.wandb_project,
        start_step=session.state.step,
        line_every=run.logging_steps,
    )
    return session


def check_same_engine(checkpoint: Path, spec: EngineSpec) -> None:
    """A checkpoint with a sharded engine's state resumes under that engine and process count.

    Raises:
        LaunchError: with the launch that wrote it.
    """
    import json

    extra = json.loads((checkpoint / "trainer_state.json").read_text()).get("extra", {})
    engine, processes = extra.get("engine", "plain"), int(extra.get("processes", 1))
    sharded = {"zero2", "zero3", "fsdp2"}
    if engine not in sharded and spec.name not in sharded:
        return  # plain and DDP checkpoints hold whole weights and optimizer: interchangeable
    if (engine, processes) != (spec.name, spec.world_size):
        raise LaunchError(
            f"{checkpoint} was written by the {engine} engine on {processes} process(es), whose "
            f"optimizer state is partitioned; this launch is {spec.describe}: resume with the "
            "launch config and --num_processes that wrote it"
        )


def _resume(session: Session, resume: Path) -> None:
    """Weights, optimizer, schedule, counters and metric history of checkpoint ``resume``."""
    own = session.engine.saves_own_state
    session.state = load_checkpoint(
        resume,
        model=None,
        optimizer=None if own else session.optimizer,
        scheduler=session.scheduler,
        restore_random=False,
    )
    if own:
        session.engine.load_state(resume / "engine")
    else:
        load_model_weights(session.policy.model, resume / "model")
    extra = session.state.extra
    session.skipped_updates = int(extra.get("skipped_updates", 0))
    session.bad_steps_in_a_row = int(extra.get("bad_steps_in_a_row", 0))
    session.last_good_step = int(extra.get("last_good_step", session.state.step))
    session.resumed_from = resume
    session.restore_random_states()  # and again just before the first step (finish_resume)
    if session.is_main:
        _restore_run_files(session, resume)
    session.accelerator.wait_for_everyone()
    logger.info("resumed from %s at step %d", resume, session.state.step)


# ----------------------------------------------------------------------------- the loop
@dataclass
class StepOutput:
    """What one training step hands the loop: its metrics and, optionally, sample rows for
    ``samples.jsonl`` (every ``run.logging_steps``)."""

    metrics: dict[str, Any]
    samples: list[dict[str, Any]] | None = None


EvalHook = Callable[[int, dict[str, Any]], "dict[str, Any] | None"]
"""Called after each evaluation with ``(step, metrics so far)``; what it returns is added to the
metrics before they are logged (the demo's greedy exact match), and it may report them (the
demo's progress lines). Hooks run in order, each seeing the previous ones' additions."""


class TrainLoop:
    """Steps ``state.step + 1 .. max_steps`` with the next rows of the data order each, saving
    every ``save_steps`` and at the end.

    Between steps it also: counts steps whose update was skipped (and raises :class:`Diverged`
    after more than ``run.max_bad_steps`` in a row, with a checkpoint), and on SIGTERM/SIGINT
    writes a checkpoint and raises :class:`Preempted`. On resume the random states are restored
    just before the first step, so whatever the trainer drew while building does not matter.
    """

    def __init__(self, session: Session, num_rows: int, rows_per_step: int) -> None:
        self.session = session
        self.order = PromptOrder(num_rows, session.config.run.seed, session.state.data_position)
        self.rows_per_step = rows_per_step
        self._saved_at = session.state.step
        self.at_start: Callable[[], None] | None = None
        """Runs before the first step of a fresh run, with the stop signals already caught (a
        SIGTERM during it stops the run after step 1 with a checkpoint)."""

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        s, run = self.session, self.session.config.run
        s.finish_resume()
        with StopSignals() as signals:
            if self.at_start is not None and s.state.step == 0:
                self.at_start()
            for step in range(s.state.step + 1, run.max_steps + 1):
                skipped = s.skipped_updates
                yield step, self.order.take(self.rows_per_step)
                s.state.step, s.state.data_position = step, self.order.position
                self._count_bad(step, s.skipped_updates > skipped)
                stop = self._agree(signals.received is not None) and step < run.max_steps
                if (run.save_steps and step % run.save_steps == 0) or stop:
                    s.save()
                    self._saved_at = step
                if stop:
                    self._stop_preempted(step, signals.received or "a signal on another process")

    def _agree(self, flag: bool) -> bool:
        """True when any process saw a stop signal (every process then stops at this step)."""
        if self.session.world_size == 1:
            return flag
        return bool(all_reduce_sum(self.session, torch.tensor([float(flag)])).item() > 0)

    def _count_bad(self, step: int, bad: bool) -> None:
        s, limit = self.session, self.session.config.run.max_bad_steps
        if not bad:
            s.bad_steps_in_a_row, s.last_good_step = 0, step
            return
        s.bad_steps_in_a_row += 1
        if limit is None or s.bad_steps_in_a_row <= limit:
            return
        finite = s.engine.weights_finite()
        path = s.save() if finite else None
        self._saved_at = step if finite else self._saved_at
        s.metrics.close()
        where = (
            f"checkpoint {path} holds the weights of the last applied update (step "
            f"{s.last_good_step})"
            if finite
            else "the weights are not finite, so no checkpoint was written; the latest one in "
            f"{s.run.checkpoints} is the last good state"
        )
        raise Diverged(
            f"step {step}: {s.bad_steps_in_a_row} steps in a row (more than run.max_bad_steps="
            f"{limit}) had a non-finite loss or gradient norm, so their updates were skipped; "
            f"{where}. Likely causes: a learning rate too high (training.lr), no gradient "
            "clipping (training.max_grad_norm), float16 overflow (use bfloat16 or float32), a "
            "reward returning inf/nan, or a degenerate batch (empty responses, every token "
            "masked). Fix the cause, then continue with: " + s.resume_command(),
            step,
            path,
        )

    def _stop_preempted(self, step: int, signame: str) -> None:
        s = self.session
        s.metrics.close()
        raise Preempted(
            f"{signame}: stopped after step {step} of {s.config.run.max_steps} with a checkpoint "
            f"in {s.run.checkpoints}; continue with: {s.resume_command()}",
            step,
            s.run.checkpoints / "latest",
        )

    def log(self, step: int, metrics: dict[str, Any], samples: list[dict] | None = None) -> None:
        s = self.session
        metrics = {**metrics, "skipped_updates": s.skipped_updates}
        s.metrics.log(step, metrics)
        if samples and step % s.config.run.logging_steps == 0:
            s.metrics.samples(step, samples)

    def log_eval(self, step: int, metrics: dict[str, Any]) -> None:
        if metrics:
            self.session.metrics.log_eval(step, metrics)

    def finish(self) -> None:
        s = self.session
        if s.state.step != self._saved_at:
            s.save()
        s.metrics.close()

    def run(
        self,
        step_fn: Callable[[int, list[int]], StepOutput | dict[str, Any]],
        evaluate: Callable[[int], dict[str, Any]] | None = None,
        eval_hooks: Sequence[EvalHook] = (),
    ) -> None:
        """The whole loop of every trainer, in one place:

        - an evaluation before the first step of a fresh run (step 0);
        - each step (``step_fn``: its metrics, or a :class:`StepOutput` with sample rows), logged;
        - an evaluation every ``run.eval_steps``, then ``eval_hooks``, then the log;
        - a checkpoint every ``run.save_steps`` and at a stop signal (the iterator), and at the
          end (:meth:`finish`).
        """
        eval_steps = self.session.config.run.eval_steps if evaluate is not None else 0

        def evaluation(step: int) -> None:
            metrics = dict(evaluate(step))
            for hook in eval_hooks:
                metrics.update(hook(step, metrics) or {})
            self.log_eval(step, metrics)

        if eval_steps:
            self.at_start = lambda: evaluation(0)
        for step, indices in self:
            out = step_fn(step, indices)
            if isinstance(out, StepOutput):
                self.log(step, out.metrics, samples=out.samples)
            else:
                self.log(step, out)
            if eval_steps and step % eval_steps == 0:
                evaluation(step)
        self.finish()
