"""Training across processes: the process group, rank helpers, data sharding and the reductions the loop needs.

A distributed run is data parallel (``distributed: ddp``; with ``fsdp`` the model is sharded instead,
train/fsdp.py, with the same batching): every process holds the whole model and the whole dataset, the
batch order is the same pure function of (seed, epoch) everywhere, and each optimizer step's
accumulation group (the *global* batch, ``batch_size`` x ``gradient_accumulation_steps`` examples,
exactly what one process trains on) is split between the processes: process ``r`` of ``N`` takes
items ``r, r+N, r+2N ...`` of every batch. Each process divides its summed loss by the *global*
group's labelled-token count (every process knows it: it has the whole group), so summing the
processes' gradients gives the gradient of one process over the whole group. That sum is one
bucketed ``all_reduce`` per optimizer step (what ``DistributedDataParallel`` does with ``no_sync``
over the accumulation passes). The loop's objective runs the bare decoder and a fused head rather
than the wrapper's ``forward`` (model/loss.py), so ``DistributedDataParallel``'s forward hooks
would not see it; reducing the trainable parameters' gradients directly also means no
``find_unused_parameters`` question for any method: a parameter without a gradient on every
process keeps none, as in one process.

Every process computes the same step metrics (loss and token sums are all-reduced; time and memory
are the slowest process's), so the health monitor, early stopping and rollbacks decide the same on
all of them. A stop (a signal, ``request_stop``) is agreed on at each step boundary. Rank 0 alone
writes events, checkpoints (with every rank's RNG state), the final weights and results.

The processes are started by torchrun (``tuneforge finetune --nproc N`` starts it for one machine),
``accelerate launch`` or anything else that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables (``MASTER_ADDR``/``MASTER_PORT``). Backend: NCCL on GPUs, gloo on CPUs
(``TUNEFORGE_DIST_BACKEND`` overrides). The group's timeout is ``TUNEFORGE_DIST_TIMEOUT_MINUTES``
(default 120): rank 0 evaluates the base model while the others wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch

T = TypeVar("T")
BUCKET_BYTES = 25 * 1024 * 1024  # DDP's default bucket size
RNG_FILE = "rng.pt"  # rank 0's RNG state; rank r > 0 has rng-rank<r>.pt beside it


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes (``size`` 1: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether there are other processes to agree with."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0


SINGLE = World()


def world_from_env(environ: dict[str, str] | None = None) -> World:
    """The ``World`` torchrun / ``accelerate launch`` describe in ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (else one process)."""
    env = os.environ if environ is None else environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return SINGLE
    return World(rank, size, local_rank) if size > 1 else SINGLE


def current_world() -> World:
    """This process's ``World``: the initialised process group's, else one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), world_from_env().local_rank)


def is_main_process() -> bool:
    """Rank 0, or not distributed at all: the process that prints and writes (decided from the environment)."""
    return world_from_env().is_main


def rng_file(rank: int) -> str:
    """The checkpoint file of rank ``rank``'s RNG state."""
    return RNG_FILE if rank == 0 else f"rng-rank{rank}.pt"


def join_process_group() -> bool:
    """Initialise the default process group when the environment describes several processes.

    Returns whether this call created it (the caller then destroys it with ``leave_process_group``).
    A GPU process uses the GPU of its ``LOCAL_RANK``.
    """
    import torch.distributed as dist

    world = world_from_env()
    if not world.active or dist.is_initialized():
        return False
    backend = os.environ.get("TUNEFORGE_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    minutes = float(os.environ.get("TUNEFORGE_DIST_TIMEOUT_MINUTES", "120"))
    dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    return True


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- sharding


def shard_group(group: Sequence[Sequence[int]], world: World) -> list[list[int]]:
    """This process's part of one accumulation group: items ``rank::size`` of every batch (empty parts dropped).

    The parts of all processes are disjoint and their union is ``group``; within a batch the items
    have similar lengths (data/batching.py), so splitting a batch keeps its padding low.
    """
    if not world.active:
        return [list(batch) for batch in group]
    parts = [list(batch[world.rank :: world.size]) for batch in group]
    return [part for part in parts if part]


# ---------------------------------------------------------------------------------------------- collectives


def _device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """``values`` summed element-wise over every process (float64)."""
    return _reduce(values, "sum")


def max_over_ranks(values: Sequence[float]) -> list[float]:
    """``values`` maximised element-wise over every process (float64)."""
    return _reduce(values, "max")


def _reduce(values: Sequence[float], how: str) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if how == "sum" else dist.ReduceOp.MAX)
    return tensor.cpu().tolist()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one process."""
    return max_over_ranks([1.0 if flag else 0.0])[0] > 0


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every process (picklable objects only)."""
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=_device() if dist.get_backend() == "nccl" else None)
    return holder[0]


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, indexed by rank, on every process."""
    import torch.distributed as dist

    found: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found, value)
    return found


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates, in a fixed order (the same on every process)."""
    return [p for p in model.parameters() if p.requires_grad]


def broadcast_parameters(model: Any) -> None:
    """Copy rank 0's trainable parameters to every process (as DDP does when it wraps a model).

    The frozen weights come from the same files everywhere; the trainable ones may be freshly
    initialised, so rank 0's values are made everybody's.
    """
    import torch.distributed as dist

    device = _device()
    for parameter in trainable_parameters(model):
        data = parameter.data if parameter.device == device else parameter.data.to(device)
        dist.broadcast(data, src=0)
        if data is not parameter.data:
            parameter.data.copy_(data)


def all_reduce_gradients(model: Any) -> None:
    """Sum the trainable parameters' gradients over every process, in buckets of flattened tensors.

    A parameter that has no gradient on any process keeps ``None`` (the optimizer skips it, as in
    one process); one that has a gradient somewhere gets zeros where it had none, then the sum.
    """
    import torch.distributed as dist

    parameters = trainable_parameters(model)
    if not parameters:
        return
    device = _device()
    has_grad = torch.tensor([0.0 if p.grad is None else 1.0 for p in parameters], dtype=torch.float64, device=device)
    dist.all_reduce(has_grad)
    reduced = []
    for parameter, anywhere in zip(parameters, has_grad.tolist()):
        if anywhere == 0:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        reduced.append(parameter.grad)
    for bucket in _buckets(reduced):
        flat = torch.cat([grad.reshape(-1).to(device) for grad in bucket])
        dist.all_reduce(flat)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive gradients of one dtype, up to ``BUCKET_BYTES`` a bucket."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        if not buckets or buckets[-1][0].dtype != grad.dtype or size + nbytes > BUCKET_BYTES:
            buckets.append([])
            size = 0
        buckets[-1].append(grad)
        size += nbytes
    return buckets


# ---------------------------------------------------------------------------------------------- launching


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """The torchrun command that runs ``python -m <module_args>`` in ``nproc`` processes on this machine.

    ``--standalone``: a c10d rendezvous on a free local port; ``--max-restarts 0``: when any process
    dies, the elastic agent stops all the others and the run ends (``tuneforge resume`` continues it).
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", *module_args]


def launch_local(nproc: int, module_args: Sequence[str], shutdown_seconds: int = 300) -> int:
    """Run ``python -m <module_args>`` in ``nproc`` processes under torchrun; return its exit status.

    Each process gets ``OMP_NUM_THREADS`` = cores / ``nproc`` unless it is set. The agent runs in a
    session of its own, so a terminal's Ctrl-C reaches only this process, which asks the agent
    once (SIGTERM); the agent passes it on to every process, which finishes its step and saves a
    checkpoint (within ``shutdown_seconds``, then the agent kills them).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(shutdown_seconds))
    command = [sys.executable, "-c", AGENT, *torchrun_command(nproc, module_args)[3:]]
    agent = subprocess.Popen(command, env=env, start_new_session=True)
    forwarded = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal forwarded
        if not forwarded and agent.poll() is None:
            forwarded = True
            agent.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return agent.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# torchrun's own main, with its way of ending said in one line instead of a traceback (the processes have
# said what happened to them; an interrupted run has saved its checkpoint).
AGENT = "import sys; from tuneforge.train.distributed import run_agent; sys.exit(run_agent(sys.argv[1:]))"


def run_agent(argv: list[str]) -> int:
    """``torchrun argv`` in this process; its exit status, a failed process's rank and exit (or signal) on stderr."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(argv)
    except SignalException as stopped:
        print(f"torchrun: {signal.Signals(stopped.sigval).name} passed on to every process", file=sys.stderr)
        return 1
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        print(f"torchrun: process rank {rank} (pid {failure.pid}) ended with {how}; every other process was stopped",
              file=sys.stderr)
        return 1
    return 0
