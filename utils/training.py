"""One training loop and one evaluation for every label representation and network.

    results = run_training(args)   # args: train.py's parsed flags (a notebook's edited)

The data lives on the device as uint8; an epoch is a seeded permutation, batched augmentation and
SGD steps whose losses stay on the device until the epoch ends (one host sync per epoch).
"""
import ctypes
import dataclasses
import functools
import inspect
import logging
import math
import statistics
import sys
import time

import torch

from architecture import build_model, eval_mode, placement
from cifar import crop_and_flip, draw_augmentation, label_noise, load_cifar, split_indices, to_float
from labels import decoding_problem, granularity_fix
from utils import distributed, preempt
from utils.atomic import finite
from utils.constants import class_count, lr_milestones
from utils.errors import EveryProcessError, UsageError, as_parsed, interrupt_says, log, stamped
from utils.flags import (acts_on, broken_training, check_force_resume, json_get, mistyped,
                         recorded_config, resume_flags, run_changes, with_added_flags)
from utils.grid import older_place
from utils.labelspace import load_label_space, space_from_state, space_sha256
from utils.progress import Progress
from utils.runs import (ATTACK_EXAMPLES, ATTACK_RESULTS, CONFIG, CONFUSION, LAST_CHECKPOINT, METRICS, RESULTS,
                        append_jsonl, best_checkpoint_name, check_base_dir, check_name_lengths, environment,
                        load_checkpoint, malformed, read_json, run_dir_of,
                        run_lock_before_loading, save_checkpoint, tensors_sha256, with_resolved_folders,
                        write_json, write_jsonl)

MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
CHECKPOINT_KEYS = ("model", "optimizer", "history", "best", "config", "label_space")
# not "delete it": a run that trained an epoch has a best checkpoint, and --resume refuses one without
# its last checkpoint (the weights --resume would otherwise train over from epoch 1)
REBUILD_ADVICE = "pass --force to start the run over"


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def lr_at(epoch, epochs, base_lr, warmup=0, done=1.0):
    """The lr of a step in epoch `epoch` (0-based) after which `done` of that epoch is trained.

    The paper's step schedule (`lr_milestones`): divide by 10 at 50% and 75% of the epochs. With
    `warmup` > 0 the lr first rises linearly, step by step, from base_lr / (warm-up steps) to
    base_lr at the end of epoch `warmup` (Goyal et al. 2017: what a large batch with a linearly
    scaled lr needs to train at all).
    """
    lr = base_lr / 10 ** sum(epoch >= m for m in lr_milestones(epochs))  # 0.01, not 0.1 * 0.1
    return lr * min(1.0, (epoch + done) / warmup) if warmup else lr


def make_optimizer(model, lr, compile=None):
    """The paper's SGD (momentum 0.9, weight decay 1e-4). Eager, one fused kernel per step (on
    this project's 2-core CPU the per-parameter loop took ~100 ms a step, the fused step ~1 ms).
    Under `compile` (a torch.compile mode) foreach ops, which torch.compile traces into a graph of
    their own (it never traces the fused kernel), with the lr a tensor on the parameters' device:
    a new lr is then an in-place fill, not a recompile (`set_lr`). Its momentum buffers exist
    from the start, as zeros: torch's SGD makes them in its first step (buffer = gradient, which
    0.9 * 0 + gradient equals exactly), so the first step would trace a graph of its own."""
    params = list(model.parameters())
    options = {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}
    if not compile:
        return torch.optim.SGD(params, lr=lr, fused=True, **options)
    optimizer = torch.optim.SGD(params, lr=torch.tensor(lr, device=params[0].device), foreach=True,
                                **options)
    for param in params:
        optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
    return optimizer


def set_lr(optimizer, lr):
    """Every group's lr to `lr` (a number or a 0-d tensor), in place where it is a tensor."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = float(lr)


def load_optimizer_state(optimizer, state):
    """`optimizer.load_state_dict(state)` keeping this optimizer's implementation (fused or
    foreach) and lr tensor: torch's would take the saved run's, and a checkpoint of an eager run
    resumed under --compile would then step with a kernel torch.compile does not trace."""
    own = [{key: group[key] for key in ("lr", "fused", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for param, saved in optimizer.state.items():  # torch checks no shapes: the first step would fail
        buffer = saved.get("momentum_buffer")
        if buffer is not None and (not isinstance(buffer, torch.Tensor) or buffer.shape != param.shape):
            raise ValueError(f"a momentum buffer of {getattr(buffer, 'shape', type(buffer))} for a "
                             f"parameter of {param.shape}")
    saved_lr = optimizer.param_groups[0]["lr"]
    for group, kept in zip(optimizer.param_groups, own):
        group.update(kept)
    set_lr(optimizer, saved_lr)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(device):
    """On a CPU under glibc, keep the memory a step frees for the next step to reuse.

    glibc's own thresholds give freed memory back to the system in some processes and not in
    others, and where they do, a step that frees its activations page-faults them all in again
    in the next: on this project's CPU up to 2.8 million page faults in 30 steps of resnet32 at
    batch 128 (0.24-0.37 million with this), the compiled step 20% slower for it and the eager
    one up to 8%. A trim threshold of 1 GiB and the largest mmap threshold glibc takes, 32 MiB,
    keep that memory in the process, as jemalloc or tcmalloc would. Process-wide; nothing is
    done for a GPU or off Linux."""
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_TRIM_THRESHOLD, 1 << 30)
        mallopt(M_MMAP_THRESHOLD, 32 << 20)


def fast_bf16(device):
    """Whether `device` computes in bf16 natively: a CUDA GPU that supports it, or a CPU for which
    oneDNN reports bf16 support (x86 from AVX-512 on). Elsewhere bf16 autocast is emulated: on an
    AMD EPYC with AVX2 only it trained a resnet32 at 13-15 images/s against 160-220 in float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_slow_bf16(device, amp):
    """One log line when --amp asks for bf16 on a device without native bf16 (`fast_bf16`)."""
    if amp and not fast_bf16(device):
        log(f"warning: --amp on a {device.type} without native bf16: bf16 autocast is emulated "
            "there and runs many times slower than float32; drop --amp for speed")


def warn_bf16_targets(space, amp):
    """One log line when --amp asks for bf16 and a class's own target, rounded to bf16 as the model's
    outputs then are, decodes as another class (`labels.decoding_problem`'s bf16): the output nearest
    to that target the model can give is another class's, so the class is predicted seldom or never.
    Label spaces without class targets (category, MCR2) have none to round."""
    targets = space.state().get("targets")
    if amp and targets is not None and (
            problem := decoding_problem(targets.numpy(), f"label {space.name}", bf16=True)):
        log(f"warning: {problem}; drop --amp (float32 tells them apart)")


def autocast(device, enabled):
    """bf16 autocast when asked (losses are computed in float32 by the label space); otherwise
    none, a caller's included (a notebook cell's `with torch.autocast(...)`): a run without --amp
    computes in float32, as its config.json and attack_results.json say.

    Without torch's cast cache: it keeps each weight's bf16 copy until the outermost autocast
    exits, and run_training's autocast(device, False), around the whole run, never exits while
    it trains: every step computed its forward with the first step's weights."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)


def prepare(images, channels_last):
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


ISOLATES_RECOMPILES = "isolate_recompiles" in inspect.signature(torch.compile).parameters


class Compiled:
    """`fn` under torch.compile in `mode` for the batch size of its first call only (the length of
    its first argument), with static shapes; a call with another batch size runs `fn` eagerly.
    Attributes are `fn`'s (a compiled model is still the model: `.eval()`, `.train()`).

    Another size comes once an epoch (the trailing batch) or once an evaluation (what is left after
    batches of 1000): an eager step costs less than compiling graphs for it. On this project's CPU
    this makes a 1-epoch resnet32 run compile 4 graphs rather than 9 (measured with the backward
    outside the step's graph; 3 with it inside) and its first epoch take 129 s rather than 216
    (torch.compile's own choice for a second size, symbolic sizes, is slower still).
    Modes with CUDA graphs replay recorded kernels: `TrainStep` marks each step, `predict` copies
    what it keeps.

    `autograd`: Dynamo traces a `.backward()` inside `fn` into `fn`'s graph (its
    `trace_autograd_ops`: the gradients by `torch.autograd.grad`, then every parameter's
    accumulation), so forward, backward and accumulations are one graph; otherwise `.backward()`
    ends a graph and runs eagerly. torch reads the setting while it traces, so it is set around
    this function's calls only, directly (7 us a call on this CPU; `config.patch` took 190 us).

    `isolated`: `fn`'s graphs count against a recompile limit of their own (torch.compile's
    `isolate_recompiles`), not against those that other `Compiled` of the same code compiled
    earlier in the process. A `TrainStep`'s graphs guard on its optimizer's identity, so each run
    in one process (a notebook calling train.main in a loop) compiles the step anew under the same
    code: without isolation the 9th (torch's recompile_limit, 8) would train without compilation.
    A torch before 2.14 (a GPU machine's own) has no such option: its runs share the limit.
    """

    def __init__(self, fn, mode, autograd=False, isolated=False):
        self.fn, self.size, self.autograd = fn, None, autograd
        isolation = {"isolate_recompiles": isolated} if ISOLATES_RECOMPILES else {}
        self.graph = torch.compile(fn, mode=mode, dynamic=False, **isolation)

    def __call__(self, batch, *args):
        self.size = self.size or len(batch)
        if len(batch) != self.size:
            return self.fn(batch, *args)
        config = torch._dynamo.config
        before, config.trace_autograd_ops = config.trace_autograd_ops, self.autograd
        try:
            return self.graph(batch, *args)
        finally:
            config.trace_autograd_ops = before

    def __getattr__(self, name):
        return getattr(self.fn, name)


def compiled(model, mode, autograd=False, isolated=False):
    """`model` as `Compiled` in torch.compile's `mode`; with no mode, the model itself."""
    return Compiled(model, mode, autograd, isolated) if mode else model


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that record CUDA graphs


def cudagraph_skips(mode, since=0):
    """Where `mode` records CUDA graphs (`CUDA_GRAPH_MODES`), how many compiled graphs torch has
    run without them in this process, less `since` (an earlier count); else 0. Such a mode falls
    back to plain kernel launches for a graph on the CPU or one it cannot record, and names the
    reason only under TORCH_LOGS=cudagraphs."""
    if mode not in CUDA_GRAPH_MODES:
        return 0
    from torch._dynamo.utils import counters  # seconds to import: only where torch.compile runs
    return counters["inductor"]["cudagraph_skips"] - since


def cudagraph_warning(mode, device, since=0):
    """A warning line when `mode` asked for CUDA graphs and some graph ran without them since the
    count `since` (`cudagraph_skips`), else None."""
    skipped = cudagraph_skips(mode, since)
    if skipped:
        why = ("there are none on the CPU" if device.type == "cpu"
               else "TORCH_LOGS=cudagraphs prints torch's reasons")
        return f"warning: --compile {mode} ran {skipped} compiled graph(s) without CUDA graphs ({why})"
    return None


def check_compiler(mode, device):
    """`--compile` on the CPU builds C++ kernels: where no C++ compiler works, say so before any
    work instead of a traceback at the first step."""
    if not mode or device.type != "cpu":
        return
    from torch._inductor import cpp_builder, exc
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise UsageError("--compile on the CPU needs a C++ compiler (g++ on the PATH) and none "
                         "works here: install one, or run without --compile") from None


def mcr2_options(args):
    return {"feature_dim": args.feature_dim, "eps2": args.mcr2_eps, "gam1": args.gam1,
            "gam2": args.gam2, "n_components": args.n_components}


def _outputs(model, images, batch_size, amp, channels_last):
    """Yield (slice, outputs) over uint8 images, each batch moved to the model's device and made
    floats of its dtype; the caller holds inference_mode and `eval_mode`."""
    device, dtype = placement(model)
    for start in range(0, len(images), batch_size):
        batch = prepare(to_float(images[start:start + batch_size].to(device), dtype), channels_last)
        with autocast(device, amp):
            yield slice(start, start + batch_size), model(batch)


@torch.inference_mode()
def predict(model, images, batch_size=1000, amp=False, channels_last=False):
    """Model outputs for uint8 images (N, 3, 32, 32) on any device, no augmentation: (N,
    *output_shape), on the model's device, float32 or wider (a float64 model's stay float64). In
    eval mode; the caller's model is left in its modes (`eval_mode`)."""
    # A copy of each batch: a CUDA graph replay (--compile reduce-overhead) reuses its output memory.
    with eval_mode(model):
        return torch.cat([out.to(torch.promote_types(out.dtype, torch.float32), copy=True)
                          for _, out in _outputs(model, images, batch_size, amp, channels_last)])


@torch.inference_mode()
def evaluate(model, space, images, labels, batch_size=1000, amp=False, channels_last=False, outputs=None,
             confusion=False):
    """Mean loss and accuracy of `model` on uint8 images (N, 3, 32, 32) with class ids (N,), in eval
    mode; the caller's model is left in its modes (`eval_mode`). The images and labels may be on any
    device: batches move to the model's, and `space` moves there too (as in `run_attack`).

    `outputs`: the model's outputs for these images, `predict`'s, scored instead of running the
    model again (the label spaces compute losses and decodes in float32 under autocast too, so
    the numbers are the same). Losses are taken over batches of `batch_size` either way: MCR2's
    is the rate reduction of a whole batch.
    `confusion`: also "confusion", the counts of the decoded classes, (C, C) int64 on the CPU, row
    the true class and column the decoded one (its trace over N is "acc"); None, as "acc", for no
    images. Off by default: each epoch's validation counts none.
    Under torchrun each process evaluates its share and the sums are combined.
    """
    share = distributed.current().share(len(images))
    images, labels = images[share], labels[share]
    device = placement(model)[0]
    space.to(device)
    totals = torch.zeros(3, device=device)  # loss sum, correct, count
    classes = space.num_classes
    counts = torch.zeros(classes * classes, dtype=torch.int64, device=device) if confusion else None
    with eval_mode(model):  # the outputs are computed lazily, batch by batch, in the loop below
        if outputs is None:
            batches = _outputs(model, images, batch_size, amp, channels_last)
        else:
            given = outputs[share]
            batches = ((slice(start, start + batch_size), given[start:start + batch_size])
                       for start in range(0, len(given), batch_size))
        for index, batch_outputs in batches:
            batch_labels = labels[index].to(device)
            totals[0] += space.loss(batch_outputs, batch_labels).sum()
            decoded = space.decode(batch_outputs)
            totals[1] += (decoded == batch_labels).sum()
            if confusion:  # cell (true, decoded) of the flattened matrix, in int64: uint8 labels (which
                # cross-entropy takes) wrapped past 255, CIFAR-100's cells landing in other rows
                cells = batch_labels.long() * classes + decoded
                counts += torch.bincount(cells, minlength=classes * classes)
    totals[2] = len(images)
    loss_sum, correct, n = distributed.all_sum(totals).tolist()
    # --valid_size 0: no accuracy, rather than an accuracy of 0
    scores = {"loss": loss_sum / n, "acc": correct / n} if n else {"loss": None, "acc": None}
    if confusion:  # n is every process's total: all of them sum, or none
        scores["confusion"] = distributed.all_sum(counts).view(classes, classes).cpu() if n else None
    return scores


# torch.compile logs one warning a process as it traces the optimizer's step, which torch wraps in a
# profiler range: "W... _internal.py:1394] [0/0] Profiler record function <class
# 'torch.autograd.profiler.record_function'> will be ignored", on stderr and in a sweep's train.log
# at every --compile run. The range only names the step in a profiler's trace; the step is
# compiled whole all the same. That record alone, by its logger and text, is dropped: torch's
# other warnings still show.
PROFILER_NOTE = ("torch._dynamo.variables.ctx_manager", "Profiler record function %s will be ignored")


def not_profiler_note(record):
    """A logging filter: False for `PROFILER_NOTE`'s record."""
    return record.msg != PROFILER_NOTE[1]


class TrainStep:
    """One SGD step as one function: crop and flip a uint8 batch with given draws, run the model,
    the per-image losses and decoded classes, backward, the optimizer's update. It owns the
    optimizer (`make_optimizer`). With `compile` (a torch.compile mode) the step is compiled
    whole, as two graphs: the forward work with the backward and every parameter's gradient
    accumulation (`Compiled`'s `autograd`; under torchrun the backward stays eager, so that DDP's
    hooks run), and the SGD update (torch's optimizer step always starts a graph of its own).
    What stays outside is the random draws, the batch gathers, the epoch totals and the
    gradients' reset: on a GPU, where a step of the paper's batch is short, each operator
    launched from the host is time the GPU waits.

    step(batch, offsets, flips, labels, scale) -> the detached pair (loss sum, number of correct
    decodes), float32 or wider; the gradients of the scaled loss sum stay on the parameters until
    the next step.
    """

    def __init__(self, model, space, lr, amp=False, channels_last=False, compile=None):
        self.model, self.space, self.amp, self.channels_last = model, space, amp, channels_last
        self.optimizer = make_optimizer(model, lr, compile)
        self._run = compiled(self._step, compile, autograd=distributed.current().world == 1, isolated=True)
        if compile:
            logging.getLogger(PROFILER_NOTE[0]).addFilter(not_profiler_note)  # once: the same filter
        # marking a step imports torch's CUDA-graph machinery (seconds, at every start): only for
        # the modes that record graphs
        self.graphs = compile in CUDA_GRAPH_MODES

    def _step(self, batch, offsets, flips, labels, scale):
        inputs = prepare(crop_and_flip(batch, offsets, flips), self.channels_last)
        with autocast(batch.device, self.amp):
            outputs = self.model(inputs)
        losses = self.space.loss(outputs, labels)
        correct = (self.space.decode(outputs.detach()) == labels).sum()
        sums = torch.stack([losses.detach().sum(), correct.to(losses.dtype)])  # in the forward graph
        (losses.sum() * scale).backward()
        self.optimizer.step()
        return sums

    def __call__(self, batch, offsets, flips, labels, scale):
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last one's outputs are read
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():  # a caller's no_grad (a notebook's torch.set_grad_enabled(False))
            return self._run(batch, offsets, flips, labels, scale)


def train_epoch(step, images, labels, batch_size, generator, lr=None, stoppable=True):
    """One pass of a `TrainStep` over the training images in a seeded order; returns {"loss",
    "acc", "images"}: mean loss and accuracy over the images trained on. `lr`, if given, maps the
    fraction of the epoch done after a step to that step's learning rate (a warm-up); otherwise the
    optimizer's stays as it is.

    A trailing batch of one image is dropped: batch norm cannot train on it. Under torchrun every
    process draws the same global batch and trains on its share (`distributed.Context.share`).
    Returns None if a preemption signal arrived mid-epoch and `stoppable` (the partial epoch is
    discarded; otherwise, and under torchrun, the signal is acted on at the epoch's end, where every
    process checks it together).
    """
    step.model.train()
    device = images.device
    ctx = distributed.current()
    order = torch.randperm(len(images), device=device, generator=generator)
    totals = torch.zeros(2, device=device)  # loss sum, correct
    starts = range(0, len(order) - 1, batch_size)
    for count, start in enumerate(starts, 1):
        if stoppable and ctx.world == 1 and preempt.requested():  # else checked at the epoch's end
            return None
        if lr is not None:
            set_lr(step.optimizer, lr(count / len(starts)))
        index = order[start:start + batch_size]
        share = ctx.share(len(index))
        offsets, flips = draw_augmentation(len(index), generator, device)
        # The sum over this share / global batch size; DDP's gradient average (1/world) is undone
        # by the factor world, so every process steps with the gradient of the global mean loss.
        # The totals are taken before any other replay can reuse a CUDA graph's outputs.
        totals += step(images[index][share], offsets[:, share], flips[share], labels[index][share],
                       ctx.world / len(index))
    seen = len(order) - (len(order) % batch_size == 1)
    loss_sum, correct = distributed.all_sum(totals).tolist()
    return {"loss": loss_sum / seen, "acc": correct / seen, "images": seen}


def _config(args, run_dir, split, data, space, label_sha256, facts, argv=None):
    return {"flags": dict(vars(args)), "run_dir": str(run_dir), **facts,
            "valid_images": len(split.valid), "test_images": len(data.test_labels),
            "num_classes": data.num_classes, "label_shape": list(space.output_shape),
            "decoding": space.decoding, "label_sha256": label_sha256, "environment": environment(argv)}


def data_facts(data, split):
    """What a run's data is, checked when the run is asked for again: the number of training
    images and the sha256 of the dataset's images and labels."""
    return {"train_images": len(split.train), "data_sha256": tensors_sha256(
        data.train_images, data.train_labels, data.test_images, data.test_labels)}


def _check_finished(run_dir, args, label_sha256, facts, results):
    """A finished run asked for with other flags, label targets or data is an error, not its old
    `results`; without its config.json, what its results.json records is checked (`recorded_config`).
    A value of another kind than train.py writes (an edited file) is an error naming the file."""
    source = run_dir / CONFIG if (run_dir / CONFIG).exists() else run_dir / RESULTS
    config = recorded_config(read_json(source) if source.name == CONFIG else None, results)
    if odd := mistyped(source, config, args, label_sha256, facts):
        raise UsageError(odd)
    if changes := run_changes(config, args, label_sha256, data=facts):
        # the flags that give its results, where some do: one who meant this run no longer knows them
        flags = resume_flags(config, args, label_sha256, facts)
        raise UsageError(f"{run_dir} holds a finished run trained with {', '.join(changes)}; "
                         + (f"ask for it {flags} to read its results, " if flags else "")
                         + "pass --force to train it again with these flags (in a sweep, which passes no "
                         "--force: delete the run directory), or use another --base_dir")


HISTORY_KEYS = {"epoch", "train_loss", "valid_acc", "valid_loss", "seconds", "images_per_s"}
NULLABLE = {"valid_acc", "valid_loss"}  # None without validation images


def _number(value, nullable=False):
    """Whether `value` is an int or float (NaN too: a diverged run's), or None where `nullable`."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) or nullable and value is None


def _malformed_entries(checkpoint):
    """The last checkpoint's entries that are not of the form train.py writes them in."""
    history, best, config = checkpoint["history"], checkpoint["best"], checkpoint["config"]
    rows = isinstance(history, list) and all(
        isinstance(r, dict) and HISTORY_KEYS <= set(r)
        and all(_number(r[k], k in NULLABLE) for k in HISTORY_KEYS - {"epoch"}) for r in history)
    epoch = best.get("epoch") if isinstance(best, dict) else None
    # a best valid_acc of None is a run's without validation images, whose best epoch has none either
    unvalidated = rows and type(epoch) is int and 0 < epoch <= len(history) \
        and history[epoch - 1]["valid_acc"] is None
    checks = {
        "model": isinstance(checkpoint["model"], dict),
        "optimizer": (isinstance(checkpoint["optimizer"], dict)
                      and {"state", "param_groups"} <= set(checkpoint["optimizer"])),
        "history": rows and [r["epoch"] for r in history] == list(range(1, len(history) + 1)),
        "best": (isinstance(best, dict) and _number(best.get("valid_acc"), nullable=unvalidated)
                 and type(epoch) is int and -1 <= epoch <= (len(history) if rows else 0)),
        "config": (isinstance(config, dict) and isinstance(config.get("flags"), dict)
                   and isinstance(config.get("segments", []), list)),
        "label_space": isinstance(checkpoint["label_space"], dict),
        "best_model": ("best_model" not in checkpoint or isinstance(checkpoint["best_model"], dict)
                       and isinstance(checkpoint.get("best_space"), dict))}
    return [name for name, fine in checks.items() if not fine]


def _check_space(state, space):
    """`state`, a checkpoint's label space, is the run's `space` (but for MCR2's fitted subspaces);
    else a ValueError (`space_from_state`'s for a state of another form)."""
    saved, own = space_from_state(state).state(), space.state()
    differ = [k for k, v in own.items() if k != "bases" and not (
        torch.equal(saved[k], v) if k == "targets" and k in saved else saved.get(k) == v)]
    if differ:
        raise ValueError(f"its label space differs from the run's in {', '.join(differ)}")


def _check_resume(checkpoint, args, path, label_sha256, facts, space):
    """The checkpoint is train.py's and trained what these flags, labels and data train with the
    run's label `space`."""
    if not isinstance(checkpoint, dict) or not set(CHECKPOINT_KEYS) <= set(checkpoint):
        raise UsageError(f"{path} is not a train.py checkpoint (it lacks "
                         f"{', '.join(k for k in CHECKPOINT_KEYS if k not in checkpoint)}); "
                         f"{REBUILD_ADVICE}")
    if bad := _malformed_entries(checkpoint):
        raise UsageError(f"{path} holds {', '.join(bad)} entries of another form than train.py "
                         f"writes; {REBUILD_ADVICE}")
    if broken := broken_training(checkpoint["config"]):  # no flags resume it: "use the same flags" is no advice
        raise UsageError(f"{path} was trained with {broken}; pass --force to start over (in a sweep: "
                         "delete the run directory)")
    trained = with_added_flags(checkpoint["config"]) | {"label_sha256": space_sha256(checkpoint["label_space"])}
    if changes := run_changes(trained, args, label_sha256, data=facts):
        # the values to pass, not 'the same flags': a job requeued days later, or resumed on another
        # machine, is started by one who no longer knows them
        flags = resume_flags(trained, args, label_sha256, facts)
        advice = f"resume it {flags}, or pass --force to start over" if flags else \
            "no flags resume it: pass --force to start over"
        raise UsageError(f"{path} was trained with {', '.join(changes)}; {advice} (in a sweep: delete the run "
                         "directory)")
    _check_space(checkpoint["label_space"], space)


def _nonfinite_loss(train_loss, valid_loss):
    """'the training loss is nan' (or the validation loss's, or inf) when an epoch's loss is not
    finite; else None. A huge lr can leave the training loss finite and the weights, and with them
    the validation loss, not."""
    for name, loss in (("training", train_loss), ("validation", valid_loss)):
        if loss is not None and not math.isfinite(loss):
            return f"{name} loss is {loss}"
    return None


def is_better(valid, best, history):
    """Whether this epoch's validation beats the best epoch's: higher accuracy, or the same with a
    lower loss (the paper's rule; accuracy ties are common late in a schedule). Without validation
    images every epoch is (the last is best). An epoch whose validation loss is not finite (a
    diverged run's) is not better than an earlier one: its NaN outputs decode every image as
    class 0, an accuracy of that class's share, which beat a weak epoch before it."""
    if valid["loss"] is not None and not math.isfinite(valid["loss"]) and best["epoch"] > 0:
        return False
    if valid["acc"] is None or valid["acc"] > best["valid_acc"]:
        return True
    best_loss = history[best["epoch"] - 1]["valid_loss"] if best["epoch"] > 0 else None
    return valid["acc"] == best["valid_acc"] and None not in (valid["loss"], best_loss) \
        and valid["loss"] < best_loss


def _same_form(weights, like):
    """Whether `weights` holds tensors of the names and shapes of the state dict `like`."""
    return isinstance(weights, dict) and weights.keys() == like.keys() and all(
        isinstance(v, torch.Tensor) and v.shape == like[k].shape for k, v in weights.items())


def _best_of(checkpoint, best_path, device, space):
    """On resume, the best epoch's weights and label space state, and whether the best checkpoint
    holds them: the last checkpoint's own when its epoch was the best; its copy of them when it
    was written just before the best checkpoint; in both, the best checkpoint holds them unless a
    job stopped before it was written (an older one is there). Else the best checkpoint's, which
    must be of that epoch. Each must be of the form of the last epoch's weights and of the run's
    label `space`."""
    best, last_epoch = checkpoint["best"], len(checkpoint["history"])
    if best["epoch"] == last_epoch:
        weights, state = checkpoint["model"], checkpoint["label_space"]
    elif "best_model" in checkpoint:
        weights, state = checkpoint["best_model"], checkpoint["best_space"]
        if not _same_form(weights, checkpoint["model"]):
            raise ValueError("its best_model weights are not of the form of its model weights")
        _check_space(state, space)
    else:
        lost = (f"the best epoch's weights (epoch {best['epoch']}) are lost and {LAST_CHECKPOINT} (epoch "
                f"{last_epoch}) cannot restore them: pass --force to train the run over")
        saved = load_checkpoint(best_path, map_location=device, advice=lost)
        if not isinstance(saved, dict) or saved.get("epoch") != best["epoch"] or not isinstance(
                saved.get("label_space"), dict) or not _same_form(saved.get("model"), checkpoint["model"]):
            raise UsageError(f"{best_path} is not the checkpoint of the run's best epoch; {lost}")
        with malformed(best_path, lost):
            _check_space(saved["label_space"], space)
        return saved["model"], saved["label_space"], True
    return {k: v.to(device) for k, v in weights.items()}, state, _holds(best_path, weights)


def _holds(path, weights):
    """Whether the checkpoint at `path` holds exactly `weights` (and so is left as it is: a finished
    run resumed, its results.json gone, kept the best checkpoint attack.py's results are of)."""
    try:
        saved = load_checkpoint(path) if path.exists() else None
    except UsageError:  # unreadable: written again
        return False
    model = saved.get("model") if isinstance(saved, dict) else None
    return _same_form(model, weights) and all(torch.equal(model[k], v) for k, v in weights.items())


def checkpoint_state(weights, model_args, space_state, epoch, config, **more):
    """What a checkpoint holds: a model's weights (its state_dict) and the arguments that build it
    again, its label space's `state()`, the epoch it is of and the run's config.json; `more`: the
    last checkpoint's optimizer, history and best, the best checkpoint's valid_acc."""
    return {"model": weights, "model_args": model_args, "label_space": space_state, "epoch": epoch,
            "config": config, **more}


class Checkpoints:
    """A run's two checkpoints while it trains: the last one (weights, optimizer, history, best
    epoch), written when due, and the best one (the best epoch's weights, what attack.py loads).

    The last checkpoint is of epoch `saved` (0: none), written at `saved_at` (time.monotonic()).
    The best epoch's weights and label space are kept in memory (`keep_best`) and written to the
    best checkpoint only when no file holds them (`best_saved`: the epoch the best checkpoint
    holds; None: unknown, or none yet): then first into the last checkpoint too, so that a job
    stopped between the two writes leaves the best epoch's weights in a file whichever one it had
    written. Under torchrun every process keeps this bookkeeping and only the main one (`writes`)
    writes the files.

    `history` is the run's list of metrics.jsonl rows, which the caller appends to; `best` is
    {"valid_acc", "epoch"} of the best epoch so far (epoch -1: none yet); `kept`: the best epoch's
    (weights, label space state, best_saved) from `_start_point`.
    """

    def __init__(self, run_dir, best_path, model, optimizer, space, config, history, best, kept, writes):
        self.run_dir, self.last_path, self.best_path = run_dir, run_dir / LAST_CHECKPOINT, best_path
        self.model, self.optimizer, self.space, self.config = model, optimizer, space, config
        self.history, self.best, self.writes = history, best, writes
        self.best_state, self.best_space, self.best_saved = kept
        self.saved, self.saved_at = len(history), time.monotonic()

    def keep_best(self, row):
        """Keep the model's weights and label space where the epoch of `row`, the last of `history`,
        validated better than the best epoch (`is_better`)."""
        if is_better({"loss": row["valid_loss"], "acc": row["valid_acc"]}, self.best, self.history):
            self.best = {"valid_acc": row["valid_acc"], "epoch": row["epoch"]}
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best_space = self.space.state()

    def due(self, now, seconds, epoch_seconds, device):
        """Whether the last checkpoint is to be written after this epoch: `now` (a stop or the last
        epoch), or on any process (a collective call) `seconds` have passed since the last one or
        the epoch took `epoch_seconds` over preempt.FINISH_SECONDS: a stop signal stops the next
        epoch at once, which without a checkpoint of its start would lose this one too."""
        return now or distributed.any_process(time.monotonic() - self.saved_at >= seconds
                                              or not preempt.may_finish(epoch_seconds), device)

    def save(self, epoch_done):
        """The last checkpoint after epoch `epoch_done`, holding the best epoch's weights too where
        neither it nor the best checkpoint does, then the best checkpoint where it is behind."""
        if self.writes:
            behind = self.best["epoch"] not in (epoch_done, self.best_saved)
            kept = {"best_model": self.best_state, "best_space": self.best_space} if behind else {}
            save_checkpoint(self.last_path, checkpoint_state(
                self.model.state_dict(), self.model.model_args, self.space.state(), epoch_done, self.config,
                optimizer=self.optimizer.state_dict(), history=self.history, best=self.best, **kept))
            self.saved = epoch_done  # a stop while the best is written keeps this one
            if behind:
                self.save_best()
        self.saved, self.saved_at = epoch_done, time.monotonic()

    def save_best(self):
        """The best checkpoint, from the kept weights, where it does not hold the best epoch yet."""
        if self.writes and self.best_saved != self.best["epoch"]:
            save_checkpoint(self.best_path, checkpoint_state(
                self.best_state, self.model.model_args, self.best_space, self.best["epoch"], self.config,
                valid_acc=self.best["valid_acc"]))
            self.best_saved = self.best["epoch"]

    def stopped(self, when):
        """What a run stopped in its loop (by Ctrl-C or a signal) keeps, as its last message."""
        kept = f"the checkpoint after epoch {self.saved} is kept" if self.saved \
            else "no checkpoint was written"
        return f"{self.run_dir}: stopped {when}; {kept}, rerun with --resume"


def _segments(checkpoint, config, device):
    """The run's segments: for each start and resume, the epoch it began after, the device it
    trained on, its number of (torchrun) processes, its --compile mode ("off" without) and its
    environment (command line, versions, machine); this one last."""
    earlier = []
    if checkpoint is not None:
        saved = checkpoint["config"]
        earlier = saved.get("segments") or [{"after_epoch": 0, "environment": saved.get("environment")}]
    return earlier + [{"after_epoch": len(checkpoint["history"]) if checkpoint else 0, "device": device.type,
                       "world_size": config["world_size"], "compile": config["flags"]["compile"] or "off",
                       "environment": config["environment"]}]


def _rounding_changes(segments):
    """What changed, of what a run's float rounding depends on (the device, torch, the GPU, a
    CPU's thread count, model and vector instructions, torch's default dtype and float32 matmul
    precision, the number of torchrun processes, --compile: its kernels round otherwise than eager
    ones), between the last two segments: ['threads 1 -> 2', ...]. A fact the earlier one did not
    record (an older train.py's) is not compared."""
    def facts(segment):
        segment = segment if isinstance(segment, dict) else {}
        env = segment.get("environment") if isinstance(segment.get("environment"), dict) else {}
        device = segment.get("device")
        on = {"cuda": ("gpu",), "cpu": ("threads", "cpu", "cpu_capability")}.get(device, ())
        return {"device": device, "torch": env.get("torch"),
                **{k: env.get(k) if k in on else None for k in ("gpu", "threads", "cpu", "cpu_capability")},
                "dtype": env.get("dtype"), "matmul_precision": env.get("matmul_precision"),
                "processes": segment.get("world_size"), "compile": segment.get("compile")}
    before, now = (facts(s) for s in segments[-2:])
    if before["device"] is not None and before["device"] != now["device"]:
        return [f"device {before['device']} -> {now['device']}"]  # the rest follows from it
    return [f"{k} {before[k]} -> {now[k]}" for k in before if before[k] is not None and before[k] != now[k]]


def _code_change(segments):
    """'labelrep commit 1a2b3c4 -> 5d6e7f8' where the last two of a run's segments ran other commits
    of labelrep (a checkout pulled between a stop and its resume: the run's epochs are of both);
    None where they ran one, or either recorded none (not a git checkout, an older train.py)."""
    before, now = (json_get(s, "environment", "git", "commit") for s in segments[-2:])
    if isinstance(before, str) and isinstance(now, str) and before != now:
        return f"labelrep commit {before[:7]} -> {now[:7]}"
    return None


def _process_and_device(args):
    """The torchrun context (one process without torchrun) and the device this process trains on,
    checked for --compile; warns once where --amp's bf16 is slow."""
    ctx = distributed.init(args.device)
    device = resolve_device(args.device)
    if device.type == "cuda" and ctx.world > 1:
        device = torch.device("cuda", ctx.local_rank)
    check_compiler(args.compile, device)
    keep_freed_memory(device)
    if ctx.main:
        warn_slow_bf16(device, args.amp)
    return ctx, device


def _seeded_model(args, output_shape, info, device):
    """The network --model with a head for targets of `output_shape` and the dataset's (`info`)
    normalisation, its initial weights drawn from --seed alone (a caller's RNG stays as it was), on
    `device` in the memory format --channels_last asks for."""
    model = build_model(args.model, output_shape, info.mean, info.std, seed=args.seed).to(device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def _start_point(args, last_path, best_path, device, space, label_sha256, facts):
    """What a run continues from: (its last checkpoint, the best epoch's weights and label space
    state, the epoch the best checkpoint holds or None: unknown, or none yet), all None for a run
    that starts at epoch 1. Checked before anything is written: an unfinished run needs --resume
    (or --force), a checkpoint must be of these flags, labels and data, and a trained run whose
    last checkpoint is gone is not trained over."""
    if args.force:
        return None, None, None, None
    if last_path.exists():
        if not args.resume:
            raise UsageError(f"{last_path} holds an unfinished run; pass --resume to continue it "
                             "or --force to start over")
        checkpoint = load_checkpoint(last_path, advice=REBUILD_ADVICE)
        with malformed(last_path, REBUILD_ADVICE):
            _check_resume(checkpoint, args, last_path, label_sha256, facts, space)
            best_state, best_space, on_file = _best_of(checkpoint, best_path, device, space)
        return checkpoint, best_state, best_space, checkpoint["best"]["epoch"] if on_file else None
    if best_path.exists():  # its last checkpoint deleted (by hand, for space)
        raise UsageError(f"{best_path} holds a trained model, but {last_path.name}, which --resume "
                         "continues from, is gone; pass --force to train the run again from epoch 1")
    return None, None, None, None


def _epoch(args, epoch, step, evaluated, train, valid, history, stoppable, progress, device, skips=None):
    """Train epoch `epoch` (0-based) with a `TrainStep` on the `train` pair (images, labels), then
    validate `evaluated` (the model, compiled as it evaluates) on the `valid` pair: the epoch's
    metrics.jsonl row, or None where a stop signal ended the epoch (`train_epoch`'s `stoppable`).
    `history`: the rows of the epochs before. Warnings go to `progress`: after the first epoch of
    this process's run (`skips`: the graphs torch ran without CUDA graphs before it, of
    `cudagraph_skips`; None for the other epochs), the graphs it ran without the CUDA graphs
    --compile asked for; a loss not finite, once."""
    space, options = step.space, {"amp": args.amp, "channels_last": args.channels_last}
    lr = lr_at(epoch, args.epochs, args.lr, args.warmup_epochs)  # at the epoch's last step
    step_lr = functools.partial(lr_at, epoch, args.epochs, args.lr, args.warmup_epochs)
    generator = torch.Generator(device).manual_seed(args.seed * 100_003 + epoch)
    start = time.perf_counter()
    train_scores = train_epoch(step, train[0], train[1], args.batch_size, generator, step_lr,
                               stoppable=stoppable)
    if train_scores is None:
        return None
    step_seconds = time.perf_counter() - start  # the training steps alone
    if skips is not None and (warning := cudagraph_warning(args.compile, device, skips)):
        progress.message(warning)  # every graph of the step has run by now
    if space.needs_fit:  # MCR2: refit the class subspaces on this epoch's training features
        space.fit(predict(evaluated, train[0], **options), train[1])
    valid_scores = evaluate(evaluated, space, valid[0], valid[1], **options)
    if space.needs_fit and epoch == 0:  # MCR2: no subspaces to decode the first epoch by
        train_scores["acc"] = None
    diverged = _nonfinite_loss(train_scores["loss"], valid_scores["loss"])
    if diverged and not (history and _nonfinite_loss(history[-1]["train_loss"], history[-1]["valid_loss"])):
        progress.message(f"warning: the {diverged} in epoch {epoch + 1}: the run diverged (a lower --lr may "
                         "help)")  # once: not again while it stays so
    return {"epoch": epoch + 1, "lr": lr,
            "train_loss": train_scores["loss"], "train_acc": train_scores["acc"],
            "valid_loss": valid_scores["loss"], "valid_acc": valid_scores["acc"],
            "seconds": time.perf_counter() - start, "images_per_s": train_scores["images"] / step_seconds}


def _epoch_line(row, epochs):
    """An epoch's `metrics.jsonl` row as `Progress.step`'s arguments: the log's line and the bar's
    fields."""
    valid = row["valid_acc"] is not None
    shown = f"valid_loss {row['valid_loss']:.4f} valid_acc {row['valid_acc']:.2%}" if valid \
        else "no validation images"
    train_acc = "-" if row["train_acc"] is None else f"{row['train_acc']:.2%}"
    return (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.4g} train_loss {row['train_loss']:.4f} "
            f"train_acc {train_acc} {shown} {row['seconds']:.1f}s {row['images_per_s']:.0f} img/s",
            {"loss": f"{row['train_loss']:.3f}", "valid": f"{row['valid_acc']:.2%}" if valid else "-"})


def _scores(model, space, train, sets, **options):
    """The trained model's loss and accuracy on each of `sets` ({name: (images, labels)}):
    {name: {"name_loss", "name_acc"}}; under "confusion", {name: its confusion matrix (`evaluate`'s;
    None for a set without images)}; and under "decoders", MCR2's, whose class subspaces are fitted
    here on the `train` pair's features, accuracies of the kNN and nearest-class-mean decoders beside
    the nearest subspace's ("name_knn_acc", ...; None for a set without images). One forward pass
    over each set serves all of its numbers."""
    train_outputs = predict(model, train[0], **options) if space.needs_fit else None
    if space.needs_fit:
        space.fit(train_outputs, train[1])
    scores = {"decoders": {}, "confusion": {}}
    for name, (images, labels) in sets.items():
        outputs = predict(model, images, **options) if space.needs_fit and len(images) else None
        result = evaluate(model, space, images, labels, outputs=outputs, confusion=True, **options)
        scores[name] = {f"{name}_acc": result["acc"], f"{name}_loss": result["loss"]}
        scores["confusion"][name] = result["confusion"]
        if space.needs_fit:
            extra = space.report(train_outputs, train[1], outputs, labels) if outputs is not None \
                else {"knn_acc": None, "ncm_acc": None}
            scores["decoders"] |= {f"{name}_{k}": v for k, v in extra.items()}
    return scores


def _results(args, config, checkpoint, best_epoch, scores, history, device):
    """results.json: what the run trained (its flags, and `config`'s facts), its `best_epoch`, its
    `scores` (`_scores`), time and speed over its `history` (metrics.jsonl's rows), the path of its
    best `checkpoint`."""
    return {"run_dir": config["run_dir"], "dataset": args.dataset, "model": args.model,
            "label": args.label, "label_granularity": args.label_granularity,
            "seed": args.seed, "level": args.level,
            "smoothing": args.smoothing if acts_on("smoothing", args.label) else 0.0,  # as it acted
            "label_noise": args.label_noise, "epochs": args.epochs,
            "best_epoch": best_epoch, **scores["valid"], **scores["test"],
            "train_images": config["train_images"], "test_images": config["test_images"],
            "train_seconds": sum(r["seconds"] for r in history),  # epochs with their validation
            # the median epoch's: the first, which compiles under --compile, does not skew it
            "images_per_s": statistics.median(r["images_per_s"] for r in history),
            "checkpoint": str(checkpoint), "device": str(device), "world_size": config["world_size"],
            **scores["decoders"]}


def run_label_space(args, num_classes):
    """The label space a run of train.py's flags `args` trains with, for a dataset of `num_classes`
    classes: its --label from --label_dir, with --smoothing and MCR2's options; a LabelError
    (saying how to get the file, `granularity_fix`) where it cannot. Its spaces check their flags by
    the functions sweep.py's `check_label_flags` calls before it queues a run."""
    fix = granularity_fix(args.dataset, args.label_granularity, args.label)
    return load_label_space(args.label, args.dataset, num_classes, args.label_dir, args.smoothing,
                            mcr2_options(args), fix=fix)


def _finished_results(run_dir, best_path, args, label_sha256, facts, main):
    """A finished run's results.json, asked for again: checked to be of these flags, labels and
    data (`_check_finished`), with the paths of the folder it is in here."""
    results_path = run_dir / RESULTS
    results = read_json(results_path)
    _check_finished(run_dir, args, label_sha256, facts, results)
    if main:
        log(stamped(f"{results_path} exists: run already complete (pass --force to train again)"))
    # the folder the run is in here: a copied archive's is not the one it trained in
    return results | {"run_dir": str(run_dir), "checkpoint": str(best_path)}


def _warn_small_split(args, data, split):
    """Warnings where the training split is small: a full dataset's smaller than its validation
    split, or one smaller than --batch_size."""
    if args.level == 100 and len(split.train) < len(split.valid):  # a small dataset
        log(f"warning: --valid_size {len(split.valid)} leaves {len(split.train)} of the "
            f"{len(data.train_labels)} training images to train on; a smaller --valid_size "
            "trains on more")
    if args.batch_size > len(split.train):  # MCR2's 1000 on a small --level, say
        log(f"warning: --batch_size {args.batch_size} is more than the {len(split.train)} training "
            f"images: each epoch is one step of {len(split.train)}")


def _changed_labels(args, noisy, labels, main):
    """How many of the training `labels` --label_noise changed (`noisy`); warns (`main`) where it
    changed none."""
    changed = int((noisy != labels).sum())
    if args.label_noise and not changed and main:  # a run of its own folder, the same as noise-free
        log(f"warning: --label_noise {args.label_noise:g} changes no label: round({args.label_noise:g} x "
            f"{len(labels)} training images) is 0")
    return changed


def _restored(model, optimizer, checkpoint, last_path):
    """The run's (history, best) so far: a start's none, or those of its last `checkpoint` (read
    from `last_path`), whose weights and optimizer state are loaded into `model` and `optimizer`."""
    if checkpoint is None:
        return [], {"valid_acc": -1.0, "epoch": -1}
    with malformed(last_path, REBUILD_ADVICE):
        model.load_state_dict(checkpoint["model"])
        load_optimizer_state(optimizer, checkpoint["optimizer"])
    return checkpoint["history"], checkpoint["best"]


def _prepare_run_dir(args, run_dir, best_path, config, history, device, start):
    """The run directory made ready (under torchrun, by rank 0) for a `start` at epoch 1, an older
    model's files removed, or for a resume, said with what changed of its rounding; then its
    `config` written to config.json and the rows of `history` (the checkpoint's epochs) to
    metrics.jsonl; a start's line says what trains, on what (`config`'s numbers, on `device`)."""
    if start:
        # a start at epoch 1 (--force, or a run whose checkpoints were deleted) trains a new best
        # checkpoint: the old run's checkpoints go, and its results and its attacks' with them (left,
        # sweep.py and report.py took the old model's attack results for the new one's)
        if (run_dir / ATTACK_RESULTS).exists() and not args.force:
            log(f"{run_dir}: removing {ATTACK_RESULTS}, of a model trained before; attack the "
                "new one again")
        # results first: a job killed in between leaves no stale result
        for name in (RESULTS, CONFUSION, ATTACK_RESULTS, ATTACK_EXAMPLES, LAST_CHECKPOINT, best_path.name):
            (run_dir / name).unlink(missing_ok=True)
    else:  # a requeued job's log says what it goes on with, as a start's does
        log(stamped(f"resuming {run_dir} after epoch {len(history)} of {args.epochs}: "
                    f"{_what_trains(args, config, device)}"))
        if changes := _rounding_changes(config["segments"]):
            log(f"warning: resumed with {', '.join(changes)}: float rounding differs from the "
                "epochs before, so the run will not end bit for bit as an uninterrupted one")
        if change := _code_change(config["segments"]):
            log(f"warning: resumed with {change}: the epochs before were trained by other code "
                "(config.json's segments record each commit)")
    write_json(run_dir / CONFIG, config)
    # the checkpoint's epochs; rows of later ones, trained again now, or an old run's go
    write_jsonl(run_dir / METRICS, history)
    if start:  # a log file (a cluster job's) says at once what trains, on what
        # --resume with nothing to resume: a typo in --seed or --base_dir trains a new run, named here
        why = " (--resume found no checkpoint there)" if args.resume else ""
        log(stamped(f"starting {run_dir} at epoch 1 of {args.epochs}{why}: {_what_trains(args, config, device)}"))


def _what_trains(args, config, device):
    """What a start's or a resume's line says trains, on what: '4170 training and 1000 validation
    images, batch 128, lr 0.1, on cuda' (with ' (rank 0 of 4 processes)' under torchrun)."""
    world = config["world_size"]
    processes = f" (rank 0 of {world} processes)" if world > 1 else ""
    return (f"{config['train_images']} training and {config['valid_images']} validation images, batch "
            f"{args.batch_size}, lr {args.lr:g}, on {device}{processes}")


def _train_epochs(args, step, evaluated, checkpoints, train, valid, device):
    """Train the epochs after those of `checkpoints.history` up to --epochs (`_epoch`): each one's
    row appended to it and (where `checkpoints.writes`) to metrics.jsonl, the best epoch kept, the
    last checkpoint written when due. A stop signal ends the process for a requeue
    (`preempt.exit_for_requeue`) after its epoch's checkpoint, or during the epoch where that
    loses nothing; Ctrl-C in the loop ends it saying what is kept (`Checkpoints.stopped`)."""
    run_dir, history, writes = checkpoints.run_dir, checkpoints.history, checkpoints.writes
    first_epoch = epoch = len(history)
    # torch counts the process's graphs: a notebook's second run warned of the first run's as its
    # own, and a GPU run that recorded all of its own, of those a cell had run on the CPU
    skips = cudagraph_skips(args.compile)
    # Ctrl-C anywhere in an epoch (its steps, validation, the checkpoint's write) says what is kept
    interrupted = interrupt_says(lambda: checkpoints.stopped(f"during epoch {epoch + 1}"))
    with Progress(args.epochs, f"{args.model} {args.label}", "epoch",
                  initial=len(history), enabled=writes, eta=True) as progress, interrupted:
        for epoch in range(first_epoch, args.epochs):
            # a stop signal ends the epoch at once where nothing trained is lost, or where the
            # epoch may not end before the kill that follows the signal
            stoppable = checkpoints.saved == epoch or not preempt.may_finish(
                history[-1]["seconds"] if history else None)
            row = _epoch(args, epoch, step, evaluated, train, valid, history, stoppable, progress, device,
                         skips=skips if epoch == first_epoch else None)
            if row is None:
                progress.close()
                preempt.exit_for_requeue(checkpoints.stopped(f"by signal during epoch {epoch + 1}"))
            history.append(row)
            checkpoints.keep_best(row)
            stopping = epoch + 1 < args.epochs and distributed.any_process(preempt.requested(), device)
            due = checkpoints.due(stopping or epoch + 1 == args.epochs, args.checkpoint_seconds,
                                  row["seconds"], device)  # on every process
            if writes:
                append_jsonl(run_dir / METRICS, row)
            if due:
                checkpoints.save(epoch + 1)
            line, fields = _epoch_line(row, args.epochs)
            progress.step(line, **fields)
            if stopping:
                progress.close()
                distributed.finish()  # every process is here: leave the group before exiting
                preempt.exit_for_requeue(f"{run_dir}: stopped by signal after epoch {epoch + 1}; "
                                         "rerun with --resume")


def _final_results(args, checkpoints, evaluated, data, train, valid, device):
    """The trained run's results (`_results`), written to results.json, and its confusion matrices to
    confusion.json: the best epoch's weights, written to the best checkpoint where it does not hold
    them yet, scored on the `train` pair's features (MCR2's subspaces), the `valid` pair and `data`'s
    test set (`_scores`)."""
    # Ctrl-C while scoring (the validation and test splits: seconds to minutes) says which run and what
    # is kept, as in the epochs: it said only 'rerun with --resume to continue from the last checkpoint'
    with interrupt_says(lambda: checkpoints.stopped(f"after epoch {len(checkpoints.history)}, while scoring "
                                                    "the best epoch")):
        checkpoints.save_best()  # what attack.py loads
        checkpoints.model.load_state_dict(checkpoints.best_state)
        test = data.test_images.to(device), data.test_labels.to(device)
        scores = _scores(evaluated, checkpoints.space, train, {"valid": valid, "test": test}, amp=args.amp,
                         channels_last=args.channels_last)
        results = _results(args, checkpoints.config, checkpoints.best_path, checkpoints.best["epoch"], scores,
                           checkpoints.history, device)
        if checkpoints.writes:  # results.json last: a run that has it has its confusion.json
            write_json(checkpoints.run_dir / CONFUSION, confusion_record(data.class_names, scores["confusion"]))
            write_json(checkpoints.run_dir / RESULTS, results)
    return results


def confusion_record(class_names, matrices):
    """confusion.json: the `class_names` in class-id order and, for "test" and "valid", the counts
    of the best checkpoint's decoded classes (`evaluate`'s), a list of C rows of C ints, row the
    true class and column the decoded one; null for a split without images."""
    return {"classes": list(class_names),
            **{split: None if matrices[split] is None else matrices[split].tolist() for split in ("test", "valid")}}


@torch.inference_mode(False)  # a caller's inference_mode (a notebook cell's) would leave no gradients
def run_training(args, argv=None):
    """Train one run as the flags say; returns the results dict (also written to results.json).
    `argv`: the command line config.json records (`utils.runs.command_line`; sys.argv when None).
    Its folders are `resolved` first (in a copy of `args`): a message names them as config.json
    records them ("no label file ../labels/..." named no file from the folder its log was read in),
    after each value is read as the command line reads it (`as_parsed`: a notebook's batch_size 0
    was a traceback, lr nan a run of NaN losses) and unset --batch_size and --lr take their
    --label's defaults (`train.label_defaults`), as train.py's."""
    from train import build_parser, label_defaults  # the script's parser: its types and choices check
    args = with_resolved_folders(label_defaults(as_parsed(build_parser(), args)))
    check_force_resume(args)
    check_base_dir(args.base_dir)  # before anything loads: outputs/less would nest a new run in the old ones
    check_name_lengths(args)  # a --label or --base_dir too long for a file name: before the data loads
    ctx, device = _process_and_device(args)
    # the label file and the label flags first: a bad --smoothing or a missing label file was refused
    # only after the dataset loaded (or downloaded, 170 MB)
    space = run_label_space(args, class_count(args.dataset, args.label_granularity))
    if ctx.main:
        warn_bf16_targets(space, args.amp)
    label_sha256 = space_sha256(space.state())  # checked against a finished or stopped run; recorded
    if space.needs_fit and ctx.world > 1:
        raise EveryProcessError(f"--label {args.label} does not train under torchrun: its loss, the rate "
                                "reduction of the whole batch, is not a sum over images, so each "
                                "process's share would give another loss; run it in one process")
    run_dir = run_dir_of(args)
    if moved := older_place(args, run_dir):  # before its folder is made: a move there would put it inside
        raise EveryProcessError(moved)
    last_path = run_dir / LAST_CHECKPOINT
    best_path = run_dir / best_checkpoint_name(args.label, args.seed, args.model)
    # one job at a time in a run directory; one there now refuses this one before the data loads
    with run_lock_before_loading(run_dir, hold=ctx.main) as lock:
        data = load_cifar(args.dataset, args.data_dir, args.label_granularity)
        split = split_indices(len(data.train_labels), args.seed, args.valid_size, args.level,
                              num_classes=data.num_classes)
        train_labels = data.train_labels[split.train]
        noisy = label_noise(train_labels, args.label_noise, data.num_classes, args.seed)
        facts = data_facts(data, split)  # checked against a finished or stopped run; recorded
        if distributed.any_process(preempt.requested(), device):  # while the data loaded: leave at once
            preempt.exit_for_requeue(f"{run_dir}: stopped by signal while starting; nothing was written, "
                                     "rerun with --resume")
        lock()
        # the others read the folder once rank 0 holds it: where another job does, rank 0's error
        # ends them here, not a check of what that job is writing there
        distributed.barrier()
        if (run_dir / RESULTS).exists() and not args.force:
            return _finished_results(run_dir, best_path, args, label_sha256, facts, ctx.main)
        if ctx.main:
            _warn_small_split(args, data, split)
        # kept: the best epoch's weights, label space state and the epoch the best checkpoint holds
        checkpoint, *kept = _start_point(args, last_path, best_path, device, space, label_sha256, facts)
        if checkpoint is not None and space.needs_fit:  # MCR2: the next epoch decodes with the
            space = space_from_state(checkpoint["label_space"])  # subspaces the last one fitted

        changed = _changed_labels(args, noisy, train_labels, ctx.main)
        config = _config(args, run_dir, split, data, space, label_sha256, facts, argv) | {
            "label_noise_changed": changed, "world_size": ctx.world}
        config["segments"] = _segments(checkpoint, config, device)
        writes = ctx.main  # under torchrun only rank 0 touches the files

        model = _seeded_model(args, space.output_shape, data.info, device)
        trained = distributed.wrap(model, ctx, device)
        step = TrainStep(trained, space, args.lr, args.amp, args.channels_last, args.compile)
        history, best = _restored(model, step.optimizer, checkpoint, last_path)
        if writes:
            _prepare_run_dir(args, run_dir, best_path, config, history, device, start=checkpoint is None)
        evaluated = compiled(model, args.compile)

        space.to(device)
        train = data.train_images[split.train].to(device), noisy.to(device)  # (images, labels) pairs
        valid = data.train_images[split.valid].to(device), data.train_labels[split.valid].to(device)
        # the whole training set goes: the run reads only the two copies (150 MB of a full dataset,
        # held twice on a CPU and kept on the host beside a GPU's copies)
        data = dataclasses.replace(data, train_images=None, train_labels=None)
        checkpoints = Checkpoints(run_dir, best_path, model, step.optimizer, space, config, history, best,
                                  kept, writes)
        # a signal the loop did not act on (one during the last epoch's validation) reaches the
        # handler of a caller of main(argv) (a notebook's, a driver's) once the run's files are written;
        # a caller's autocast stays out: without --amp the run computes in float32, as config.json says
        with preempt.catching(), autocast(device, False):
            _train_epochs(args, step, evaluated, checkpoints, train, valid, device)
            results = _final_results(args, checkpoints, evaluated, data, train, valid, device)
        return finite(results)  # as results.json and the JSON line hold them: a NaN loss is None
