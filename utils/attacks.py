"""One projected sign-gradient attack; FGSM, the basic iterative method and PGD are its presets.

    targets = draw_targets(data.test_labels, space.num_classes, seed=7)        # (N,) one per image
    result = run_attack(model, space, images, labels, "pgd", eps=8 / 255)      # pixel units
    result = run_attack(model, space, images, labels, "fgsm", eps=8 / 255, targets=targets)
    result = run_attack(model, space, images, labels, "iterative", eps=0.1, protocol="paper")
    result["robust_acc"], result["target_success"], result["images_per_s"]
    shared = Shared()  # one per run: the folded network, clean predictions and gradients made once
    results = [run_attack(model, space, images, labels, "fgsm", eps, shared=shared) for eps in epsilons]
    result = run_attack(source, source_space, images, labels, "pgd", judge=(model, space))  # transfer

The attacked function is the model wrapper, which takes images (N, 3, H, W) in [0, 1] and normalises
inside, so eps, step sizes and the clamp are in pixel units. Every step is

    x <- clamp(x + sign * step_size * sign(grad_x loss(model(x), goal)), low, high)

where `goal` is the true class (sign +1: climb the loss) or the target class (sign -1: descend it),
the loss is the label space's own (`space.adversarial_loss`: cross-entropy for category, SmoothL1 to
the class target for target labels, cross-entropy over the subspace projection norms for mcr2; with
objective "margin", the decoder's margin, see `objective_value`),
and [low, high] is the eps-ball around the clean image intersected with the allowed range. Presets:

    fgsm        1 step of eps, no random start
    iterative   `steps` steps of `step_size`, no random start (the basic iterative method)
    pgd         the same from a uniform random start in the eps-ball, `restarts` times; per image,
                the first restart that succeeds is kept (the worst case for the model); targeted,
                where none reaches the target, the last that misclassified the image, if any

Protocols (`threat`):

    pixel   eps is an L-inf radius in pixel units; every image stays in [0, 1]. Defaults: 10 steps
            of 2.5 * eps / steps (Madry et al.).
    paper   the paper's attack.py. Its images were normalised by (mean, std) before the attack, so
            its eps and step sizes are in normalised units: in pixel space the radius of channel c
            is eps * std_c. Its FGSM clamps the normalised image to that image's own [min, max]
            (one min and one max over all channels and pixels of the image, `image.min().item()`);
            in pixel space that is the per-channel interval [min * std_c + mean_c, max * std_c +
            mean_c], which can reach slightly outside [0, 1]. Its iterative attack has no range
            clamp at all (the line is commented out in its code), only the eps-ball. Defaults:
            5 steps of eps / steps. Two differences: the paper's iterative attack never cleared
            the input's `.grad`, so its step k followed the sign of the sum of the gradients of
            steps 0..k; ours follows the current gradient (bench/paper_attack.py re-creates the
            original, accumulation included). And targets come from `draw_targets` (--seed), not
            from the paper's in-loop draws after torch.manual_seed(444).

Robust accuracy is the fraction of the evaluated images still classified as their true class after
the attack; images misclassified before the attack count as failures and are not attacked (as in
the paper). A transfer attack (`judge`: another model and its label space) crafts its images against
`model`, as above (its loss, threat, restarts judged by its own predictions), and the judge
classifies them, clean and attacked: the judge's robust accuracy to images it never saw the
gradients of (Athalye et al. 2018's check for gradient masking). The targeted success rate is the
fraction of the attacked images (those correctly classified before the attack) whose prediction
becomes the target class. Predictions come from `space.decode`, the decoder training and
evaluation use.

Nothing depends on the batch size, up to float rounding (which can flip the sign of a gradient
element): the model is in eval mode, each image's loss is its own term of a sum, targets are drawn
once per test index, and random starts are a function of (seed, restart, image index) alone.
"""
import math
import time
from dataclasses import dataclass

import torch

from architecture import fold_batch_norm, placement
from cifar import to_float
from utils.constants import OBJECTIVES, schedule
from utils.errors import UsageError, choice
from utils.labelspace import margin
from utils.training import autocast, prepare

NOISE_BLOCK = 256  # images per seeded block of random-start noise


@dataclass
class Threat:
    """Where a batch's adversarial images may go. low, high: (N, 3, H, W), the eps-ball around each
    clean image intersected with the allowed range; radius, step: (1, 3, 1, 1), pixel units."""
    radius: torch.Tensor
    step: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def subset(self, index):
        return Threat(self.radius, self.step, self.low[index], self.high[index])


def threat(images, eps, plan, protocol, mean, std):
    """The Threat for clean images (N, 3, H, W) in [0, 1] (see the module docstring)."""
    shape = (1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    if protocol == "pixel":
        scale, lower, upper = torch.ones_like(std), images.new_tensor(0.0), images.new_tensor(1.0)
    elif plan.attack == "fgsm":  # paper: the normalised image's own min and max, back in pixels
        scale = std
        normalised = (images - mean) / std
        lower = normalised.amin((1, 2, 3), keepdim=True) * std + mean
        upper = normalised.amax((1, 2, 3), keepdim=True) * std + mean
    else:                        # paper: its iterative attack only projects onto the eps-ball
        scale, lower, upper = std, images.new_tensor(-math.inf), images.new_tensor(math.inf)
    radius = eps * scale
    return Threat(radius=radius, step=plan.step_size * scale,
                  low=torch.maximum(images - radius, lower), high=torch.minimum(images + radius, upper))


def objective_value(space, outputs, goal, objective="loss"):
    """Per-image value (N,) that an attack climbs (untargeted, goal = the true classes) or descends
    (targeted, goal = the targets). "loss": the label space's adversarial loss, as in the paper.
    "margin": the decoder's own margin, max over c != goal of score_c minus score_goal (`space.scores`:
    logits for category, minus the squared distance to each class target for target labels, the
    projection norms for mcr2; Carlini and Wagner's f6),
    positive exactly when the prediction is not `goal`: an objective aligned with the decision,
    where the regression loss to one target need not be."""
    if objective == "margin":
        return margin(space.scores(outputs), goal)
    return space.adversarial_loss(outputs, goal)


def gradient_sign(model, space, x, goal, amp=False, objective="loss"):
    """sign(grad_x objective(model(x), goal)) for a batch (N, 3, H, W): the direction every step
    takes (climbed untargeted, descended targeted). Gradients w.r.t. the input only; model in eval
    mode."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), autocast(x.device, False):  # a caller's no_grad or autocast stays out
        with autocast(x.device, amp):
            outputs = model(x)
        # A sum over images: each image's gradient is that of its own objective.
        loss = objective_value(space, outputs, goal, objective).sum()
        grad, = torch.autograd.grad(loss, x)
    return grad.sign()


class Stopped(Exception):
    """A stop request (preemption) seen between two steps of an attack."""


def perturb(model, space, images, goal, box, steps, targeted=False, start=None, amp=False,
            first_sign=None, objective="loss", stop=None):
    """The attack loop: `steps` projected sign-gradient steps from `images` (+ `start`).

    images: (N, 3, H, W) float, clean; goal: (N,) class ids, the true classes (untargeted: the loss
    is climbed) or the targets (targeted: descended); box: a Threat for these images; start: (N, 3,
    H, W) initial perturbation or None; first_sign: gradient_sign at the clean images when already
    known (without a start the first step takes it). Returns the adversarial images, inside
    [box.low, box.high]. The model must be in eval mode; no parameter `.grad` is touched. `stop`
    is polled before every step; when it returns True, `Stopped` is raised.
    """
    sign = -1.0 if targeted else 1.0  # the one place the objective's direction is set
    x = images.clone() if start is None else torch.clamp(images + start, box.low, box.high)
    for step in range(steps):
        if stop is not None and stop():
            raise Stopped
        known = step == 0 and start is None and first_sign is not None
        direction = first_sign if known else gradient_sign(model, space, x, goal, amp, objective)
        x = torch.clamp(x + sign * box.step * direction, box.low, box.high)
    return x


class Shared:
    """What the settings of one attack run share, so it is computed once: the network with its
    batch norms folded (per memory format), and batch by batch the clean predictions (every setting
    needs them) and, per goal (untargeted or targeted), the gradient sign at the clean images
    (FGSM's whole direction at every eps, the first step of the iterative attack). Valid for
    models left unchanged, one set of images, labels and targets, one batch size and one amp
    setting: attack.py makes one per run. Each is kept per network: the folded network per model
    (the module itself the key, so that no other model's is ever taken for it), the clean
    predictions per network that makes them, the signs per network crafting and network judging (a
    transfer attack's, with `run_attack`'s judge, are the source's gradients at the images the judge
    classifies correctly), so that a white-box and a transfer attack sharing one (a notebook's)
    never take each other's work.
    `networks` starts from another Shared's folded networks. Signs are kept as int8 (a quarter of
    the images' memory per goal)."""

    def __init__(self, networks=None):
        self.networks = {} if networks is None else networks
        self.clean, self.signs = {}, {}

    def network(self, model, channels_last=False):
        """`model` folded (`fold_batch_norm`) in the memory format."""
        key = (model, channels_last)
        if key not in self.networks:
            folded = fold_batch_norm(model)
            self.networks[key] = folded.to(memory_format=torch.channels_last) if channels_last else folded
        return self.networks[key]

    def clean_pred(self, judged, key, compute):
        """The clean predictions `compute` makes of the batch `key` with the (folded) network `judged`."""
        return _memo(self.clean, (judged, key), compute)

    def clean_sign(self, crafted, judged, key, compute):
        """The gradient sign `compute` makes with the (folded) network `crafted` at the clean images of
        the batch and goal `key` that `judged` classifies correctly."""
        return _memo(self.signs, (crafted, judged, key), lambda: compute().to(torch.int8))


def _memo(store, key, compute):
    if key not in store:
        store[key] = compute()
    return store[key]


def draw_targets(labels, num_classes, seed):
    """One random other class per image: (N,) ids != labels, uniform over the other classes.

    Drawn once for a whole split from torch.Generator().manual_seed(seed), so image i gets the same
    target whatever the batch size, --num_images (beyond truncation) or label representation.
    """
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(labels),), generator=generator)
    return (labels.cpu() + shift) % num_classes


def start_noise(positions, shape, seed, restart):
    """Uniform noise in [-1, 1], (len(positions), *shape) on the CPU, for the images at `positions`
    (indices into the evaluated set). Each block of NOISE_BLOCK consecutive indices has its own
    generator seeded by (seed, restart, block), so an image's noise depends on nothing else."""
    positions = positions.cpu()
    blocks = positions // NOISE_BLOCK
    noise = torch.empty(len(positions), *shape)
    for block in blocks.unique().tolist():
        generator = torch.Generator().manual_seed(((seed * 1_000_003 + restart) * 1_000_003 + block)
                                                  % 2 ** 63)
        values = torch.rand(NOISE_BLOCK, *shape, generator=generator) * 2 - 1
        chosen = blocks == block
        noise[chosen] = values[positions[chosen] % NOISE_BLOCK]
    return noise


def attack_images(model, space, images, labels, plan, box, targets=None, positions=None, seed=0,
                  amp=False, clean_sign=None, objective="loss", stop=None):
    """Attack clean images (N, 3, H, W) with every restart of `plan`; returns (adversarial images,
    their predicted classes). A restart only attacks the images that no earlier restart got past:
    untargeted, those still classified as their true class; targeted, those not yet at the target,
    and an image an earlier restart misclassified keeps that image unless this one misclassifies
    it too (robust accuracy is the worst case over restarts, targeted or not).
    positions: (N,) indices of the images in the evaluated set (they key the random starts; None:
    `images` are the whole set, 0 to N - 1); clean_sign: gradient_sign at `images` towards the goal,
    when known; stop: see `perturb`."""
    positions = torch.arange(len(images)) if positions is None else positions
    targeted = targets is not None
    goal = targets if targeted else labels
    adversarial, predictions = images.clone(), labels.clone()
    todo = torch.arange(len(images), device=images.device)
    for restart in range(plan.restarts):
        part = box.subset(todo)
        start = None
        if plan.random_start:
            noise = start_noise(positions[todo], images.shape[1:], seed, restart)
            start = noise.to(images.device, images.dtype) * part.radius
        x = perturb(model, space, images[todo], goal[todo], part, plan.steps, targeted, start, amp,
                    clean_sign, objective, stop)  # clean_sign: only without a random start (todo = all)
        predicted = classify(model, space, x, amp)
        # keep this restart's image unless an earlier one did more harm: targeted, an image an
        # earlier restart misclassified (off its target) stays misclassified if this one is not
        kept = _harm(predicted, labels[todo], goal[todo]) >= _harm(predictions[todo], labels[todo], goal[todo])
        adversarial[todo[kept]], predictions[todo[kept]] = x[kept], predicted[kept]
        succeeded = predicted == goal[todo] if targeted else predicted != labels[todo]
        todo = todo[~succeeded]
        if not len(todo):
            break
    return adversarial, predictions


def classify(model, space, images, amp=False):
    """The classes (N,) `space`'s decoder reads from `model`'s outputs for `images`, without
    gradients."""
    with torch.no_grad(), autocast(images.device, amp):
        return space.decode(model(images))


def _harm(predicted, labels, goal):
    """0: still the true class; 1: another class; 2: the goal, where it is a target (not the
    true class)."""
    return (predicted != labels).int() + ((predicted == goal) & (goal != labels)).int()


def attack_dtype(model):
    """The dtype `run_attack` computes `model`'s attacks in: the model's (torch's default where it
    was built: a caller's float64), float32 at least. The images, and so the eps-ball's arithmetic,
    are in it: in a model.bfloat16()'s dtype, steps of 1/255 round to 1.5/255 near 1 (the model
    computes in its own)."""
    return torch.promote_types(placement(model)[1], torch.float32)


@torch.inference_mode(False)  # a caller's inference_mode (a notebook cell's) would leave no input gradient
def run_attack(model, space, images, labels, attack="pgd", eps=8 / 255, *, targets=None,
               protocol="pixel", steps=None, step_size=None, restarts=1, seed=0, batch_size=500,
               objective="loss", amp=False, channels_last=False, shared=None, keep_images=False,
               stop=None, judge=None):
    """Robust accuracy of `model` under one attack setting, evaluated in batches.

    images: (N, 3, H, W) float in [0, 1] or uint8, on any device (batches move to the model's,
    in its dtype, or float32 for a model of fewer bits);
    labels: (N,) class ids; targets: (N,) class ids for a targeted attack, each another than its
    image's label (see draw_targets), or None; eps, step_size: pixel units, or normalised units
    under protocol "paper"; steps, step_size default to the protocol's (see `schedule`); seed keys
    the random starts; objective: "loss" or "margin" (see `objective_value`); channels_last runs
    the network in that memory format (faster convolutions on CPUs, same results up to float
    rounding).
    shared: a `Shared` passed to every setting of one run, so that the folded network, clean
    predictions and the gradient at the clean images are made once (without it, per call).
    `stop` is polled between batches and between attack steps: when it returns True the setting is
    abandoned and None returned (preemption).
    judge: (model, label space) of another model on the same device, for a transfer attack: the
    images are crafted against `model` and `space` (the same ones whatever the judge: `model`'s own
    predictions steer its restarts), and the judge classifies them; every number below is then
    the judge's (the attacked images are those the judge classifies correctly).

    Returns a dict: robust_acc, clean_acc, target_success (targeted only; None when no image was
    attacked), attacked (images correctly classified before the attack), class_images and
    class_robust (per class id, `space.num_classes` whole counts: the evaluated images of the class,
    and those of them still classified as it after the attack; they sum to N and to robust_acc * N,
    so that a report pools seeds exactly), steps, step_size,
    restarts, seconds, images_per_s (evaluated images per second of this call: work taken from
    `shared` is counted where it was done; None at eps 0, which attacks nothing); with
    keep_images also adversarial (N, 3, H, W) on the CPU (clean images where nothing was
    attacked), clean_pred and adv_pred (N,).
    """
    plan = schedule(attack, eps, protocol, steps, step_size, restarts)
    choice("objective", objective, OBJECTIVES)
    if targets is not None and (targets.shape != labels.shape or (targets.cpu() == labels.cpu()).any()):
        raise UsageError("targets must be one class per image, each another than the image's label "
                         "(draw_targets draws such targets)")
    device, dtype = placement(model)[0], attack_dtype(model)
    space.to(device)
    mean, std = model.model_args["mean"], model.model_args["std"]
    shared = Shared() if shared is None else shared
    model = shared.network(model, channels_last)  # an eval-mode copy, batch norms folded into convolutions
    judged, judge_space = (model, space) if judge is None else (
        shared.network(judge[0], channels_last), judge[1].to(device))
    targeted = targets is not None
    totals = torch.zeros(2, dtype=torch.int64, device=device)  # clean correct (= attacked), hits
    # per class: images, robust (their sum is the robust count)
    classes = torch.zeros(2, space.num_classes, dtype=torch.int64, device=device)
    kept = {"adversarial": [], "clean_pred": [], "adv_pred": []}
    begin = time.perf_counter()
    for first in range(0, len(images), batch_size):
        if stop is not None and stop():
            return None
        batch = images[first:first + batch_size].to(device)
        # float images of another dtype (numpy's float64 / 255) in the attack's (above)
        batch = prepare(to_float(batch, dtype) if batch.dtype == torch.uint8 else batch.to(dtype), channels_last)
        batch_labels = labels[first:first + batch_size].to(device)
        goal = targets[first:first + batch_size].to(device) if targeted else batch_labels

        clean_pred = shared.clean_pred(judged, first, lambda: classify(judged, judge_space, batch, amp))
        correct = (clean_pred == batch_labels).nonzero().squeeze(1)
        adversarial, adv_pred = batch.clone(), clean_pred.clone()
        if eps > 0 and len(correct):
            clean_sign = None
            if not plan.random_start:
                clean_sign = shared.clean_sign(model, judged, (first, targeted, objective), lambda: (
                    gradient_sign(model, space, batch[correct], goal[correct], amp, objective)))
            box = threat(batch[correct], eps, plan, protocol, mean, std)
            try:
                adversarial[correct], adv_pred[correct] = attack_images(
                    model, space, batch[correct], batch_labels[correct], plan, box,
                    goal[correct] if targeted else None, positions=first + correct, seed=seed, amp=amp,
                    clean_sign=clean_sign, objective=objective, stop=stop)
            except Stopped:
                return None
            if judge is not None:  # what counts is the judge's reading of the crafted images
                adv_pred[correct] = classify(judged, judge_space, adversarial[correct], amp)
        totals[0] += len(correct)
        survived = correct[adv_pred[correct] == batch_labels[correct]]
        classes[0] += torch.bincount(batch_labels, minlength=space.num_classes)
        classes[1] += torch.bincount(batch_labels[survived], minlength=space.num_classes)
        if targeted:
            totals[1] += (adv_pred[correct] == goal[correct]).sum()
        if keep_images:
            for key, value in (("adversarial", adversarial), ("clean_pred", clean_pred), ("adv_pred", adv_pred)):
                kept[key].append(value.cpu())
    attacked, hits = totals.tolist()  # the host sync that ends the timing
    seconds = time.perf_counter() - begin
    class_images, class_robust = classes.tolist()
    robust = sum(class_robust)
    n = len(images)
    result = {"robust_acc": robust / max(n, 1), "clean_acc": attacked / max(n, 1), "attacked": attacked,
              "class_images": class_images, "class_robust": class_robust,
              "steps": plan.steps, "step_size": plan.step_size, "restarts": plan.restarts,
              "seconds": seconds, "images_per_s": n / seconds if eps > 0 and seconds > 0 else None}
    if targeted:  # no rate when no image was attacked
        result["target_success"] = hits / attacked if attacked else None
    if keep_images:
        result.update({key: torch.cat(values) for key, values in kept.items()})
    return result
