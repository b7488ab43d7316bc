"""What every trainer's loop shares: the session (processes, model, optimizer, run directory,
metrics, checkpoints), the seeded data order, and the cross-process sums.

Gradients are summed across processes by hand (one all-reduce per parameter before the optimizer
step), not averaged by DDP: every trainer weighs its losses with the global normaliser, so the sum
is the gradient of the whole step's loss whatever the split into micro-batches and processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.run.build import build_optimizer, derive_seed, load_policy, make_accelerator
from dllm_rl.run.checkpoint import (
    TrainerState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from dllm_rl.run.cli import to_dict
from dllm_rl.run.metrics import MetricsLogger
from dllm_rl.run.rundir import RunDir, agree_on_output_dir, create_run_dir

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


# ----------------------------------------------------------------------------- the session
@dataclass
class Session:
    """One process's share of a run: model, optimizer, schedule, run directory, metrics."""

    accelerator: Any
    policy: DiffusionLM
    optimizer: torch.optim.Optimizer
    scheduler: Any
    run: RunDir
    config: Any
    metrics: MetricsLogger | None = None
    state: TrainerState = field(default_factory=TrainerState)
    skipped_updates: int = 0

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
        return [p for p in self.policy.model.parameters() if p.requires_grad]

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``d loss`` (already weighted by the global normaliser) into ``.grad``."""
        loss.backward()

    def optimizer_step(self) -> float:
        """Sum gradients across processes, clip, step; returns the pre-clip gradient norm.

        A non-finite gradient norm skips the update (counted in ``skipped_updates``).
        """
        params = self.trainable()
        if self.world_size > 1:
            import torch.distributed as dist

            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        max_norm = self.config.training.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(params, math.inf if max_norm is None else max_norm)
        if torch.isfinite(norm):
            self.optimizer.step()
        else:
            self.skipped_updates += 1
            logger.warning("non-finite gradient norm (%s): update skipped", float(norm))
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def generators(self) -> dict[str, torch.Generator]:
        return {}

    def save(self) -> Path | None:
        """A checkpoint of the current state (main process writes; all wait)."""
        path = None
        if self.is_main:
            path = save_checkpoint(
                self.run.checkpoints,
                self.state,
                model=self.policy.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                generators=self.generators(),
                tokenizer=self.policy.tokenizer,
                save_total_limit=self.config.run.save_total_limit,
            )
            logger.info("checkpoint: %s", path)
        self.accelerator.wait_for_everyone()
        return path


def start_session(config: Any, recipe: str, argv: list[str], updates_per_step: int = 1) -> Session:
    """Processes, run directory, policy, optimizer and schedule; resumes when asked.

    Args:
        config: a trainer config with ``run``, ``model`` and ``training`` sections.
        recipe: the recipe name (default output folder).
        argv: the command line (written to ``command.txt``).
        updates_per_step: optimizer steps per training step (the schedule's length is
            ``max_steps * updates_per_step``).
    """
    run = config.run
    accelerator = make_accelerator(run.device)
    torch.manual_seed(derive_seed(run.seed, "init") % (2**31))  # LoRA init; same on every rank
    root = agree_on_output_dir(run.output_dir, recipe, accelerator)
    run.output_dir = root
    rundir = RunDir(Path(root))
    if accelerator.is_main_process:
        rundir = create_run_dir(root, config, argv, accelerator.num_processes)
    accelerator.wait_for_everyone()
    policy = load_policy(config.model, accelerator.device)
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        for p in policy.model.parameters():
            if p.requires_grad:
                dist.broadcast(p.data, src=0)
    optimizer, scheduler = build_optimizer(
        policy.model, config.training, run.max_steps * updates_per_step
    )
    session = Session(accelerator, policy, optimizer, scheduler, rundir, config)
    if run.resume_from:
        path = resolve_checkpoint(run.resume_from, rundir.checkpoints)
        session.state = load_checkpoint(
            path, model=policy.model, optimizer=optimizer, scheduler=scheduler
        )
        logger.info("resumed from %s at step %d", path, session.state.step)
    session.metrics = MetricsLogger(
        rundir.root,
        run.max_steps,
        is_main=accelerator.is_main_process,
        report_to=run.report_to,
        config=to_dict(config),
        project=run.wandb_project,
        start_step=session.state.step,
    )
    return session


# ----------------------------------------------------------------------------- the loop
class TrainLoop:
    """Steps ``state.step + 1 .. max_steps`` with the next rows of the data order each, saving
    every ``save_steps`` and at the end."""

    def __init__(self, session: Session, num_rows: int, rows_per_step: int) -> None:
        self.session = session
        self.order = PromptOrder(num_rows, session.config.run.seed, session.state.data_position)
        self.rows_per_step = rows_per_step
        self._saved_at = session.state.step

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        s, run = self.session, self.session.config.run
        for step in range(s.state.step + 1, run.max_steps + 1):
            yield step, self.order.take(self.rows_per_step)
            s.state.step, s.state.data_position = step, self.order.position
            if run.save_steps and step % run.save_steps == 0:
                s.save()
                self._saved_at = step

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
