"""Data-parallel training across processes started by torchrun.

    torchrun --nproc_per_node 4 train.py --model resnet32 --label speech ...

Every process holds the whole split and draws the same seeded batch; each trains on its share of
it (the global batch size is unchanged), batch norm statistics are computed over the whole global
batch, gradients are averaged, validation and test counts are summed, and only rank 0 writes
files. So N processes train the same model as one process would, up to float rounding.
"""
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn as nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self):
        return self.rank == 0

    def share(self, n):
        """The slice of a global batch of n items that this process trains on."""
        bounds = [round(n * r / self.world) for r in range(self.world + 1)]
        return slice(bounds[self.rank], bounds[self.rank + 1])


def init(device_name):
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context()
    cuda = device_name != "cpu" and torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier():
    """Wait until every process has got here; nothing in a single process. Where another process
    has ended, a RuntimeError (`lost_peer`)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish():
    """Leave the process group once every process has finished (a barrier)."""
    barrier()
    leave()


def leave():
    """Leave the process group at once, waiting for no other process (an error's or a stop's way
    out). A process that exits with its gloo group still open can abort in the group's destructor
    ("terminate called without an active exception", exit -6): 2 of 20 two-process runs here did,
    failing the launch, and 1 in 3 that stopped on an error that every process raised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# gloo's words for a peer whose process ended: it closed the connection, or the kernel reset it
# (a SIGKILL in the middle of a collective: a plain RuntimeError, which was a 90-line traceback)
PEER_GONE = ("closed by peer", "reset by peer", "Broken pipe")


def lost_peer(err):
    """Whether `err` is this process's collective failing because another process of the group has
    ended (its own error, above, says why)."""
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and (isinstance(err, dist.DistError) or any(words in str(err) for words in PEER_GONE)))


def current():
    """The Context of this process (rank 0 of 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Context()


def any_process(flag, device):
    """True on every process if `flag` is true on any (one collective call)."""
    if current().world == 1:
        return flag
    return all_sum(torch.tensor([float(flag)], device=device)).item() > 0


def all_sum(tensor):
    """Sum a tensor over processes (in place); the identity in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the global batch (all processes).

    torch's SyncBatchNorm runs on CUDA only; this one works with any backend because it reduces
    [sum, sum of squares, count] with the functional all_reduce: differentiable, and traced by
    torch.compile (which refuses torch.distributed.nn's deprecated all_reduce and then ran the
    whole model eagerly under `--compile`). Parameter and buffer names equal BatchNorm's, so
    checkpoints are interchangeable.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        channels = x.shape[1]
        # The sums in float32 at least, as BatchNorm's own for a bf16 input (--amp): in bf16,
        # E[x^2] - E[x]^2 lost the variance of a channel whose mean is a few times its std
        # (a variance of 0 or below: outputs of hundreds, or NaN)
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        count = wide.new_full((1,), x.numel() // channels)
        stats = funcol.all_reduce(torch.cat([wide.sum(dims), wide.square().sum(dims), count]), "sum",
                                  dist.group.WORLD)
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean.square()).clamp_min(0)  # rounding can take it below
        if self.track_running_stats:
            self._track(mean, var, n)
        shape = [1, channels] + [1] * (x.dim() - 2)
        scale = (torch.rsqrt(var + self.eps) if self.weight is None else
                 self.weight / torch.sqrt(var + self.eps)).view(shape)
        out = (wide - mean.view(shape)) * scale
        return (out if self.bias is None else out + self.bias.view(shape)).to(x.dtype)  # as BatchNorm's

    def _track(self, mean, var, n):
        """The running statistics' update by this step's global `mean` and `var` (of `n` values), as
        BatchNorm's: momentum None is the cumulative average of every step's."""
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)


def global_batch_norm(module):
    """Replace every BatchNorm1d/2d in `module` by GlobalBatchNorm of its settings sharing its parameters."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            # The same Parameter and buffer objects: an optimiser built earlier keeps working.
            replacement.weight, replacement.bias = child.weight, child.bias
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(replacement, buffer, getattr(child, buffer))
            setattr(module, name, replacement)
        else:
            global_batch_norm(child)
    return module


def wrap(model, ctx, device):
    """DDP around a model whose batch norms see the global batch; unchanged in one process."""
    if ctx.world == 1:
        return model
    global_batch_norm(model)
    # Buffers need no broadcast before each forward: every process updates its batch norms' running
    # statistics from the same global sums. (torch 2.14 renamed the flag; the older name warns.)
    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
