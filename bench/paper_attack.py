"""The paper's attack loop re-created, one image at a time, to time it and to check ours against it.

    accuracy = paper_fgsm(model, space, images, labels, eps=0.1)                 # normalised units
    accuracy = paper_iterative(model, space, images, labels, eps=0.1, steps=5)
    accuracy = paper_fgsm(model, space, images, labels, eps=0.1, targets=targets)  # targeted

What BoyuanChen/label_representations' attack.py and utils/attack_{category,highdim}_utils.py do,
kept here on purpose (timings and the `--paper_protocol` cross-check depend on it):
- a DataLoader of batch size 1 with 4 workers yields images already normalised by (mean, std)
  (per image: PIL image -> ToTensor -> Normalize); the network runs without our wrapper's
  normalisation (model.trunk then model.head), so eps and the clamp are in normalised units, as in
  the paper. Without a `loader` (the tests) the tensors are normalised directly, which gives the
  same numbers; the benchmark passes `paper_loader(...)` to time the paper's data path too (its
  workers persist across calls: the paper restarted them per eps, amortised over 10,000 images);
- one forward pass; an image whose prediction is wrong is skipped and counts as a failure; at
  eps 0 a correct image counts as correct without an attack;
- the loss of that output (cross-entropy for category, SmoothL1 to the class's target otherwise;
  targeted: to the target class's target), `model.zero_grad()` as torch 1.x ran it (the
  parameters' gradients zero-filled, where torch 2 frees them), `loss.backward()`: parameter
  gradients are computed too, as in the paper;
- FGSM: x + eps * sign(x.grad) (minus, targeted), clamped to [x.min(), x.max()] of this normalised
  image (scalars over all channels, read with `.item()`);
- iterative: alpha = eps / steps; the input tensor keeps its `.grad` across steps and nobody clears
  it, so step k follows the sign of the SUM of the gradients of steps 0..k; the total perturbation
  is clamped to [-eps, eps] and there is no range clamp (the paper's is commented out);
- success is judged on the last output, with the label space's decoder (argmax or nearest target,
  what the paper's `is_nn_target` computes).
Returns the robust accuracy: images still correct / all images. Targets are passed in (the paper
drew them inside the loop after a global `torch.manual_seed(444)`; we leave the global RNG alone).
"""
import signal

import torch
from PIL import Image


class PaperImages(torch.utils.data.Dataset):
    """The paper's CIFAR dataset: per item, as torchvision's CIFAR10 reads one, a PIL image made
    from its uint8 array, through torchvision transforms (random crop and flip when training),
    normalised with (mean, std)."""

    def __init__(self, images01, labels, mean, std, train=False):
        import torchvision.transforms as T
        self.pixels = (images01 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        self.labels = labels.tolist()
        augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
        self.transform = T.Compose([*augment, T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.pixels[i])), self.labels[i]


class PaperLoader(torch.utils.data.DataLoader):
    """torch's DataLoader, whose worker processes SIGTERM ends as Ctrl-C does. `timeout`, SLURM's
    scancel and `kill -- -PGID` signal the whole process group, workers too: torch let a worker
    die of a SIGTERM its parent did not send (or, just forked, raise bench.py's KeyboardInterrupt),
    and the parent raised 'DataLoader worker (pid N) is killed by signal: Terminated' over its own
    `error: interrupted`. Its workers start with SIGTERM blocked (a new process inherits the mask)
    and take it as their loop's end once started (`_stop_quietly`); one sent meanwhile waits."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=_stop_quietly, **kwargs)

    def __iter__(self):
        block = getattr(signal, "pthread_sigmask", None)  # (not on Windows)
        mask = block(signal.SIG_BLOCK, {signal.SIGTERM}) if block else None
        try:  # starts the workers, the first time
            return super().__iter__()
        finally:
            if block:
                block(signal.SIG_SETMASK, mask)


def _stop_quietly(worker_id):
    """A `PaperLoader` worker's start: SIGTERM is a KeyboardInterrupt, which ends its loop quietly
    (exit status 0), as Ctrl-C does."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def paper_loader(images01, labels, mean, std, workers=4):
    """The paper's test loader: batch size 1, `workers` worker processes, PIL transforms per image."""
    return PaperLoader(PaperImages(images01, labels, mean, std), batch_size=1, num_workers=workers,
                       persistent_workers=workers > 0)


def _attacked(model, space, images01, labels, loader):
    """The paper's per-image prologue: one normalised image at a time (from `loader`, or from the
    tensors when None), input gradient on, one forward pass of the network without our wrapper's
    normalisation; yields (index, network, image, label, output) for the images classified
    correctly and skips the others (they count as failures)."""
    model.eval()
    net = torch.nn.Sequential(model.trunk, model.head)
    device = images01.device
    if loader is None:
        normalised = (images01 - model.mean) / model.std
        loader = ((normalised[i:i + 1], labels[i:i + 1]) for i in range(len(normalised)))
    for i, (data, label) in enumerate(loader):
        data = data.to(device).clone().requires_grad_(True)
        label = torch.as_tensor(label, device=device).view(1)
        output = net(data)
        if space.decode(output).item() == label.item():
            yield i, net, data, label, output


def _goal(labels, targets, i):
    return (targets if targets is not None else labels)[i:i + 1]


def paper_fgsm(model, space, images01, labels, eps, targets=None, loader=None):
    """images01: (N, 3, H, W) float in [0, 1]; labels, targets: (N,) class ids; eps in normalised
    units; loader: `paper_loader` over the same images, or None to read the tensors. Returns the
    robust accuracy of the paper's per-image FGSM."""
    direction = -1 if targets is not None else 1
    correct = 0
    for i, net, data, label, output in _attacked(model, space, images01, labels, loader):
        if eps == 0:
            correct += 1
            continue
        loss = space.adversarial_loss(output, _goal(labels, targets, i)).mean()
        net.zero_grad(set_to_none=False)
        loss.backward()
        perturbed = data + direction * eps * data.grad.sign()
        perturbed = torch.clamp(perturbed, data.min().item(), data.max().item())
        correct += int(space.decode(net(perturbed)).item() == label.item())
    return correct / len(images01)


def paper_iterative(model, space, images01, labels, eps, steps=5, targets=None, loader=None):
    """The paper's basic iterative attack with its gradient accumulation; alpha = eps / steps.
    Arguments as paper_fgsm; returns the robust accuracy."""
    alpha = (-1 if targets is not None else 1) * eps / steps
    correct = 0
    for i, net, data, label, output in _attacked(model, space, images01, labels, loader):
        if eps == 0:
            correct += 1
            continue
        original = data.detach().clone()
        goal = _goal(labels, targets, i)
        for _ in range(steps):
            loss = space.adversarial_loss(output, goal).mean()
            net.zero_grad(set_to_none=False)
            loss.backward()  # adds to data.grad: it is never cleared between steps
            total = torch.clamp(data.data + alpha * data.grad.sign() - original, -eps, eps)
            data.data = original + total
            output = net(data)
        correct += int(space.decode(output).item() == label.item())
    return correct / len(images01)
