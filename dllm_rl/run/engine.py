"""The training engine: how gradients meet across processes, and how sharded state is saved.

Every trainer talks to one :class:`Engine` through the shared session and never learns which
one runs. The launch picks it (:func:`engine_spec`, read from the environment ``accelerate
launch`` sets up, before anything loads):

=========  ==================================================================================
``plain``  one process, the bare model
``ddp``    several processes, torch DDP through ``accelerator.prepare`` (``no_sync`` on every
           backward of a step but its last)
``zero2``  DeepSpeed ZeRO-2 through ``accelerator.prepare``: optimizer state and gradients
           partitioned over ranks
``zero3``  DeepSpeed ZeRO-3 (``offload``: parameters and optimizer state in CPU memory):
           parameters partitioned too
``fsdp2``  ``torch.distributed.fsdp.fully_shard`` on every decoder layer, then the root
           (accelerate's own FSDP plugin does not run on CPU, so the launch config selects it
           and this module drives it)
=========  ==================================================================================

Three rules make them interchangeable (each pinned by a test on CPU over gloo):

* **Sums, not means.** Engines average gradients over ranks; the trainers' losses already carry
  the step's global normaliser and expect a sum, so :meth:`Engine.backward` scales every loss by
  the world size.
* **The same calls on every rank.** ZeRO-2 communicates in every backward, ZeRO-3 and FSDP2 in
  every forward and backward: :func:`dllm_rl.trainers.common.run_calls` agrees on the number of
  forward/backward calls of a step and pads with zero-weighted ones; a non-finite loss is still
  back-propagated (as NaN, so every engine's gradient norm is NaN and every rank skips the
  update), never skipped.
* **Full parameters for no-grad work.** Rollouts, evaluation and the old/reference log-prob
  passes run inside :meth:`Engine.full_parameters` (ZeRO-3 gathers, FSDP2 unshards once), so
  their forward counts may differ across ranks.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dllm_rl.devices import npu_available
from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.run.errors import StartError

logger = logging.getLogger(__name__)

ENGINES = ("plain", "ddp", "zero2", "zero3", "fsdp2")


class LaunchError(StartError):
    """The launch (engine, process count, or a checkpoint written under another launch) cannot
    run; the message says what to launch instead. ``train.py`` prints it and exits with 2."""


def _true(value: str | None) -> bool:
    return str(value or "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class EngineSpec:
    """Which engine a launch asks for.

    Attributes:
        name: one of :data:`ENGINES`.
        offload: ZeRO-3 with parameters and optimizer state offloaded to CPU memory.
        world_size: processes of the launch.
    """

    name: str
    offload: bool = False
    world_size: int = 1

    @property
    def deepspeed(self) -> bool:
        return self.name in ("zero2", "zero3")

    @property
    def shards_parameters(self) -> bool:
        """Parameters live in shards: forwards communicate, so their count must agree."""
        return self.name in ("zero3", "fsdp2")

    @property
    def describe(self) -> str:
        extra = " with CPU offload" if self.offload else ""
        return f"{self.name}{extra} on {self.world_size} process(es)"


def _deepspeed_stage(env: dict[str, str]) -> tuple[int, bool, bool]:
    """(ZeRO stage, optimizer offload, parameter offload) of a DeepSpeed launch."""
    path = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if path and path.lower() != "none":
        try:
            zero = json.loads(Path(path).read_text()).get("zero_optimization", {})
        except (OSError, ValueError) as error:
            raise LaunchError(f"DeepSpeed config file {path}: {error}") from None
        stage = int(zero.get("stage", 0))
        opt = str(zero.get("offload_optimizer", {}).get("device", "none")).lower()
        par = str(zero.get("offload_param", {}).get("device", "none")).lower()
    else:
        stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        opt = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower()
        par = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none").lower()
    return stage, opt not in ("none", ""), par not in ("none", "")


def engine_spec(env: dict[str, str] | None = None) -> EngineSpec:
    """The engine the launch environment asks for; refuses the untested ones.

    Raises:
        LaunchError: a launch mode with no tests behind it (named, with what to use instead).
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    tested = "tested: DeepSpeed ZeRO-2, ZeRO-3 (with or without CPU offload of both), FSDP2"
    if _true(env.get("ACCELERATE_USE_DEEPSPEED")):
        stage, opt, par = _deepspeed_stage(env)
        if stage == 2 and not (opt or par):
            return EngineSpec("zero2", False, world)
        if stage == 3 and _true(env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT")):
            raise LaunchError(
                "DeepSpeed ZeRO-3 with zero3_init_flag: true is not supported yet (untested: the "
                "model would load already partitioned): set zero3_init_flag: false, as "
                "scripts/accelerate/deepspeed_zero3.yaml does"
            )
        if stage == 3 and opt == par:
            return EngineSpec("zero3", opt, world)
        what = f"DeepSpeed ZeRO stage {stage}" + (
            f" with offload (optimizer {opt}, parameters {par})" if opt or par else ""
        )
        raise LaunchError(
            f"{what} is not supported by the dllm-rl trainers ({tested}): use "
            "scripts/accelerate/deepspeed_zero2.yaml, deepspeed_zero3.yaml or "
            "deepspeed_zero3_offload.yaml"
        )
    if _true(env.get("ACCELERATE_USE_FSDP")):
        version = env.get("FSDP_VERSION", "1")
        if version != "2":
            raise LaunchError(
                f"FSDP version {version} is not supported by the dllm-rl trainers ({tested}): "
                "use scripts/accelerate/fsdp2.yaml (fsdp_version: 2)"
            )
        if _true(env.get("FSDP_OFFLOAD_PARAMS")):
            raise LaunchError(
                "FSDP2 with fsdp_offload_params is not supported yet (untested): use "
                "scripts/accelerate/deepspeed_zero3_offload.yaml for CPU offload"
            )
        return EngineSpec("fsdp2", False, world)
    return EngineSpec("ddp" if world > 1 else "plain", False, world)


# ----------------------------------------------------------------------------- the accelerator
@contextmanager
def _hidden(env_vars: tuple[str, ...]) -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in env_vars if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def make_accelerator(spec: EngineSpec, device: str = "auto") -> Any:
    """The ``accelerate.Accelerator`` for ``spec`` on ``device`` ("cpu", or "auto").

    Without a GPU (or with ``device="cpu"``) several processes talk over gloo. A DeepSpeed launch
    must not be built with ``cpu=True`` (that silently disables DeepSpeed); FSDP2 is driven here,
    so accelerate's FSDP plugin is kept out of the Accelerator.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    on_cpu = device == "cpu" or not (torch.cuda.is_available() or npu_available())
    handlers: list[Any] = [DistributedDataParallelKwargs(broadcast_buffers=False)]
    if spec.world_size > 1 and on_cpu:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    if spec.deepspeed:
        return Accelerator(kwargs_handlers=handlers)
    fsdp_env = tuple(k for k in os.environ if k.startswith("FSDP_")) + ("ACCELERATE_USE_FSDP",)
    with _hidden(fsdp_env) if spec.name == "fsdp2" else nullcontext():
        return Accelerator(cpu=on_cpu, kwargs_handlers=handlers)


def close_processes(synchronize: bool = True) -> None:
    """Tear the process group down before the interpreter exits: left to exit-time destructors,
    gloo's threads can abort a rank ("terminate called without an active exception").

    Args:
        synchronize: wait for every rank first (a rank that tore its group down while another
            still talked to it aborted the other the same way). Only after a run that ended
            normally on every rank: after an error the others may never arrive.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- engines
class Engine:
    """The plain engine (one process, the bare model); the others override what differs.

    Attributes:
        spec: what the launch asked for.
        policy: the model adapter; ``policy.model`` stays the bare module, ``policy.runner``
            is the wrapper forwards go through (DDP, the DeepSpeed engine), if any.
        optimizer: the optimizer the trainer's scheduler drives.
    """

    def __init__(self, spec: EngineSpec, accelerator: Any) -> None:
        self.spec = spec
        self.accelerator = accelerator
        self.policy: DiffusionLM | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.max_grad_norm: float | None = None

    @property
    def module(self) -> nn.Module:
        return self.policy.model

    @property
    def world_size(self) -> int:
        return self.spec.world_size

    @property
    def name(self) -> str:
        return self.spec.name

    # ------------------------------------------------------------------ setup
    def prepare(
        self,
        policy: DiffusionLM,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        max_grad_norm: float | None,
    ) -> torch.optim.Optimizer:
        """Wrap ``policy.model`` and build its optimizer; returns the optimizer to schedule."""
        self.policy = policy
        self.optimizer = make_optimizer(policy.model)
        self.max_grad_norm = max_grad_norm
        return self.optimizer

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ one step
    def micro_step(self, last: bool) -> Any:
        """Context of one forward/backward call; ``last``: the step's final call."""
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``d loss`` (a share of the step's summed loss) into the gradients."""
        (loss * self.world_size if self.world_size > 1 else loss).backward()

    def step(self, bad: bool) -> float:
        """Clip and apply the accumulated gradient unless ``bad`` or its norm is not finite.

        Returns:
            The pre-clip gradient norm (NaN when ``bad``); the update was applied iff finite.
        """
        params = self.trainable()
        for p in params:  # a step that back-propagated nothing still steps AdamW, as a zero
            if p.grad is None:  # gradient would (momentum, weight decay)
                p.grad = torch.zeros_like(p)
        norm = math.nan
        if not bad:
            limit = math.inf if self.max_grad_norm is None else self.max_grad_norm
            norm = _to_float(torch.nn.utils.clip_grad_norm_(params, limit))
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    # ------------------------------------------------------------------ full parameters
    def full_parameters(self) -> Any:
        """Context in which every rank holds the full parameters (no-grad forwards)."""
        return nullcontext()

    # ------------------------------------------------------------------ checkpoints
    def model_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The consolidated state dict on the main process (None elsewhere); a collective."""
        return None  # None: save_pretrained reads the module itself

    @property
    def saves_own_state(self) -> bool:
        """The engine writes its (partitioned) optimizer state itself (:meth:`save_state`)."""
        return False

    def save_state(self, folder: Path) -> None:
        """Every rank writes its share of the optimizer state (and shards) under ``folder``."""

    def load_state(self, folder: Path) -> None:
        """Inverse of :meth:`save_state` (weights included)."""

    def weights_finite(self) -> bool:
        with self.full_parameters():
            return all(bool(torch.isfinite(p).all()) for p in self.trainable())


def _to_float(norm: Any) -> float:
    if hasattr(norm, "full_tensor"):  # a DTensor (FSDP2)
        norm = norm.full_tensor()
    return float(norm)


class DDPEngine(Engine):
    """torch DDP through ``accelerator.prepare``; the gradient all-reduce runs in the step's
    last backward only (``no_sync`` before it)."""

    def prepare(self, policy, make_optimizer, max_grad_norm):
        optimizer = super().prepare(policy, make_optimizer, max_grad_norm)
        self.ddp = self.accelerator.prepare(policy.model)
        policy.runner = self.ddp
        return optimizer

    def micro_step(self, last: bool) -> Any:
        return nullcontext() if last else self.ddp.no_sync()

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        """No-grad forwards skip the DDP wrapper (nothing to reduce)."""
        self.policy.runner = None
        try:
            yield
        finally:
            self.policy.runner = self.ddp


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO-2/3 through ``accelerator.prepare``, with the client AdamW.

    The gradient accumulation boundary is DeepSpeed's unmanaged mode: every backward reduces
    into the partitions and ``engine.step()`` is the boundary, so no backward has to be known
    as the last in advance. The trainer's scheduler keeps driving the client optimizer's
    learning rate (DeepSpeed gets no scheduler).
    """

    def prepare(self, policy, make_optimizer, max_grad_norm):
        self.policy, module = policy, policy.model
        self.max_grad_norm = max_grad_norm
        optimizer = make_optimizer(module)
        plugin = self.accelerator.state.deepspeed_plugin
        config = plugin.deepspeed_config
        dtype = next(module.parameters()).dtype
        config.update(
            {
                "train_micro_batch_size_per_gpu": 1,  # not used: the trainers batch themselves
                "train_batch_size": self.world_size,
                "gradient_accumulation_steps": 1,
                "managed_gradient_accumulation": False,
                "gradient_clipping": 0.0 if max_grad_norm is None else float(max_grad_norm),
                "zero_allow_untested_optimizer": True,
                "zero_force_ds_cpu_optimizer": False,
                "steps_per_print": 2**62,
                "bf16": {"enabled": dtype == torch.bfloat16, "check_grad_overflow": True},
                "fp16": {"enabled": dtype == torch.float16},
            }
        )
        zero = config.setdefault("zero_optimization", {})
        hidden = getattr(getattr(module, "config", None), "hidden_size", None)
        if hidden:  # the sizes transformers' Trainer gives DeepSpeed's "auto" (set ones stay)
            sized = {"reduce_bucket_size": hidden * hidden}
            if self.spec.name == "zero3":
                sized["stage3_prefetch_bucket_size"] = int(0.9 * hidden * hidden)
                sized["stage3_param_persistence_threshold"] = 10 * hidden
            for key, value in sized.items():
                if zero.get(key, "auto") == "auto":
                    zero[key] = value
        if self.spec.name == "zero3":
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        self.ds, _ = self.accelerator.prepare(module, optimizer)  # accelerate keeps its wrapper
        policy.runner = self.ds
        self.optimizer = optimizer  # the client optimizer: its param groups carry the lr
        return optimizer

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self, bad: bool) -> float:
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        applied = bool(getattr(self.ds, "_step_applied", True))
        norm = math.nan if norm is None else _to_float(norm)
        if bad and applied:  # a NaN loss always gives a NaN gradient norm: not expected
            logger.warning("DeepSpeed applied an update that a non-finite loss should skip")
        if bad:
            return math.nan
        return norm if applied else (norm if not math.isfinite(norm) else math.inf)

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        """ZeRO-3: gather every parameter once and take ZeRO-3's fetch/release hooks off the
        module meanwhile (TRL's ``remove_hooks``/``add_hooks``, as its generation does): with
        the hooks on, the parameter coordinator releases and prefetches parameters inside the
        block and leaves some in flight when it closes, once a model exceeds
        ``stage3_max_live_parameters`` (tested with 1M)."""
        if self.spec.name != "zero3":
            yield
            return
        import deepspeed
        from trl.models.utils import add_hooks, remove_hooks

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            remove_hooks(self.ds)
            self.policy.runner = None  # the bare module: nothing to gather or reduce
            try:
                yield
            finally:
                self.policy.runner = self.ds
                add_hooks(self.ds)

    def model_state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.spec.name != "zero3":
            return None
        state = self.accelerator.get_state_dict(self.ds)  # collective; None off rank 0
        return state if self.accelerator.is_main_process else None

    @property
    def saves_own_state(self) -> bool:
        return True

    def save_state(self, folder: Path) -> None:
        self.ds.save_checkpoint(
            str(folder), tag="state", save_latest=False, exclude_frozen_parameters=True
        )

    def load_state(self, folder: Path) -> None:
        path, _ = self.ds.load_checkpoint(
            str(folder),
            tag="state",
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state in {folder}")


class FSDP2Engine(Engine):
    """``fully_shard`` on every decoder layer (the classes the model names in
    ``_no_split_modules``), then the root; sharded optimizer state, one file per rank."""

    def prepare(self, policy, make_optimizer, max_grad_norm):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        module = policy.model
        device = self.accelerator.device
        mesh = init_device_mesh(device.type, (self.world_size,))
        self.reshard = reshard = _true(os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true"))
        layers = decoder_layers(module)
        if not layers:
            raise LaunchError(
                f"FSDP2: {type(module).__name__} names no decoder layer class in "
                "_no_split_modules, so it cannot be sharded layer by layer: use a DeepSpeed "
                "config (scripts/accelerate/deepspeed_zero3.yaml)"
            )
        for layer in layers:
            fully_shard(layer, mesh=mesh, reshard_after_forward=reshard)
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
        return super().prepare(policy, make_optimizer, max_grad_norm)

    def _units(self) -> list[nn.Module]:
        from torch.distributed.fsdp import FSDPModule

        return [m for m in self.module.modules() if isinstance(m, FSDPModule)]

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        units = self._units()
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False)
        try:
            yield
        finally:
            for unit in units:
                unit.set_reshard_after_forward(self.reshard)
                unit.reshard()

    def _options(self, full: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=True)

    def model_state_dict(self) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.module, options=self._options(True))  # collective
        return state if self.accelerator.is_main_process else None

    @property
    def saves_own_state(self) -> bool:
        return True

    def save_state(self, folder: Path) -> None:
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        shards = {
            "model": get_model_state_dict(self.module, options=self._options(False)),
            "optimizer": get_optimizer_state_dict(
                self.module, self.optimizer, options=self._options(False)
            ),
        }
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(shards, folder / f"rank-{self.accelerator.process_index}.pt")

    def load_state(self, folder: Path) -> None:
        from torch.distributed.checkpoint.state_dict import (
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        path = folder / f"rank-{self.accelerator.process_index}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"no FSDP2 shard at {path}: resume with the process count that wrote it"
            )
        shards = torch.load(path, weights_only=False)
        set_model_state_dict(self.module, shards["model"], options=self._options(False))
        set_optimizer_state_dict(
            self.module, self.optimizer, shards["optimizer"], options=self._options(False)
        )


def decoder_layers(module: nn.Module) -> list[nn.Module]:
    """The modules of the classes ``module`` (or the model it wraps) lists in
    ``_no_split_modules``: transformers' name for its decoder layers."""
    names: set[str] = set()
    for m in module.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    return [m for m in module.modules() if type(m).__name__ in names]


def build_engine(spec: EngineSpec, accelerator: Any) -> Engine:
    """The engine object for ``spec`` (a plain dict: adding one touches this and a class)."""
    kinds: dict[str, type[Engine]] = {
        "plain": Engine,
        "ddp": DDPEngine,
        "zero2": DeepSpeedEngine,
        "zero3": DeepSpeedEngine,
        "fsdp2": FSDP2Engine,
    }
    return kinds[spec.name](spec, accelerator)
