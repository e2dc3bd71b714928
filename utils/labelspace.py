"""A label representation: the class targets, the loss, and the decoder, in one object.

    space = load_label_space("speech", dataset="cifar10", num_classes=10, label_dir="labels/label_files")
    model = build_model("resnet32", space.output_shape)
    loss = space.loss(model(images), labels).mean()     # per-image losses, shape (N,)
    predictions = space.decode(model(images))           # (N,) class ids

Training, evaluation and every attack go through this interface, so none of their arithmetic asks
which kind of label it is dealing with (flag defaults and file lookups do, by name).
"""
import torch
import torch.nn.functional as F

from labels import check_targets, decoding_problem, load_label, nearest_scores, targets_sha256
from utils.constants import check_smoothing, most_smoothing
from utils.errors import UsageError

CATEGORY = "category"


def at_least_float32(outputs):
    """Losses and distances in float32 under bf16 autocast, float64 if the model is float64."""
    return outputs.to(torch.promote_types(outputs.dtype, torch.float32))


def full_precision(tensor):
    """Autocast off on the tensor's device, for the matrix products of distances and projections:
    in bf16 they decode outputs to another class than the nearest target (476 of 1000 with
    cifar100_normal_dim=10)."""
    return torch.autocast(tensor.device.type, enabled=False)


class CategorySpace:
    """One-hot classes: logits (N, C), cross-entropy with optional label smoothing, argmax.

    Smoothing `s` as the paper's (torchtoolbox's LabelSmoothingLoss): the true class keeps 1 - s,
    each other class gets s / (C - 1). torch's `label_smoothing` spreads its amount over all C
    classes, the true one included, so the paper's s is torch's s * C / (C - 1)."""
    needs_fit = False  # decoding needs nothing fitted on training outputs (MCR2's does)
    decoding = "argmax"  # config.json's: how a prediction is made, which the label's name does not say

    def __init__(self, num_classes, smoothing=0.0):
        check_smoothing(smoothing, num_classes)
        self.name = CATEGORY
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.output_shape = (num_classes,)
        self.torch_smoothing = smoothing * num_classes / (num_classes - 1)

    def to(self, device):
        return self

    def loss(self, outputs, labels):
        """Per-image losses (N,), computed in float32 whatever the autocast dtype."""
        return F.cross_entropy(at_least_float32(outputs), labels, reduction="none", label_smoothing=self.torch_smoothing)

    def adversarial_loss(self, outputs, labels):
        """The loss attacks climb (or descend, targeted): plain cross-entropy, also for a model
        trained with smoothing, as the paper's attack (utils/attack_category_utils.py, whose
        LabelSmoothingLoss import is commented out)."""
        return F.cross_entropy(at_least_float32(outputs), labels, reduction="none")

    def scores(self, outputs):
        """(N, C), larger for likelier classes: the logits."""
        return at_least_float32(outputs)

    def decode(self, outputs):
        return self.scores(outputs).argmax(1)

    def state(self):
        return {"name": CATEGORY, "num_classes": self.num_classes, "smoothing": self.smoothing}


class TargetSpace:
    """One fixed target per class (C, *shape): SmoothL1 regression, nearest-target decoding."""
    needs_fit = False
    decoding = "nearest_target"

    def __init__(self, name, targets):
        self.name = name
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.num_classes = len(self.targets)
        self.output_shape = tuple(self.targets.shape[1:])
        # Distances are measured from the targets' mean, which changes none of them, so that a
        # large offset common to all targets (say 1000 + small differences) does not cancel away
        # the differences in float32.
        flat = self.targets.flatten(1).double()
        center = flat.mean(0)
        self._center, self._flat = center.float(), (flat - center).float()
        self._sq_norms = self._flat.square().sum(1)
        # in NumPy, the same function a sweep checks label files with before any run
        if problem := decoding_problem(self.targets.cpu().numpy(), f"label {name}"):
            raise UsageError(problem)

    def to(self, device):
        self.targets, self._center, self._flat, self._sq_norms = (
            t.to(device) for t in (self.targets, self._center, self._flat, self._sq_norms))
        return self

    def loss(self, outputs, labels):
        """Per-image SmoothL1 (N,), the mean over each target's elements, in float32."""
        outputs = at_least_float32(outputs)
        per_element = F.smooth_l1_loss(outputs, self.targets[labels].to(outputs.dtype), reduction="none")
        return per_element.flatten(1).mean(1)

    def adversarial_loss(self, outputs, labels):
        return self.loss(outputs, labels)

    def scores(self, outputs):
        """(N, C): minus the squared distance to each class target, up to a term the same for
        every class (`labels.nearest_scores`), with autocast off."""
        flat = at_least_float32(outputs).flatten(1)
        with full_precision(flat):
            return nearest_scores(flat, self._center, self._flat.to(flat.dtype), self._sq_norms)

    def decode(self, outputs):
        """Class of the nearest target by squared distance. outputs: (N, *shape) -> (N,)."""
        return self.scores(outputs).argmax(1)

    def state(self):
        return {"name": self.name, "num_classes": self.num_classes, "targets": self.targets.cpu()}


def margin(scores, goal):
    """max over c != goal of scores[:, c], minus scores[:, goal]: (N,), positive exactly when the
    decoder (argmax of the scores) does not pick `goal` (ties aside)."""
    others = scores.scatter(1, goal[:, None], float("-inf"))
    return others.amax(1) - scores.gather(1, goal[:, None]).squeeze(1)


def load_label_space(label, dataset, num_classes, label_dir, smoothing=0.0, mcr2_options=None, fix=None):
    """`category`, `mcr2` (options: feature_dim, eps2, gam1, gam2, n_components), or the targets
    in `{label_dir}/{dataset}_{label}.npy` (`fix`: how to get a file of num_classes targets)."""
    if label == CATEGORY:
        return CategorySpace(num_classes, smoothing)
    if label == "mcr2":
        from utils.mcr2 import MCR2Space
        return MCR2Space(num_classes, **(mcr2_options or {}))
    return TargetSpace(label, load_label(dataset, label, label_dir, num_classes, fix, (CATEGORY, "mcr2")))


def space_sha256(state):
    """`targets_sha256` of a label space's `state()` targets; None for a space without targets."""
    return None if state.get("targets") is None else targets_sha256(state["targets"].cpu())


def space_from_state(state):
    """Rebuild a label space from its `state()` dict (as stored in checkpoints); a state of another
    form (a file edited by hand, written by another program) is a ValueError saying what is wrong."""
    name, num_classes = state["name"], state["num_classes"]
    if not isinstance(name, str) or type(num_classes) is not int or num_classes < 2:
        raise ValueError(f"its label space {name!r} has {num_classes!r} classes, not a name and a "
                         "whole number above 1")
    if name == CATEGORY:
        smoothing, most = state.get("smoothing", 0.0), most_smoothing(num_classes)
        if not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= most:
            raise ValueError(f"its label smoothing {smoothing!r} is not a number in [0, {most:g}]")
        return CategorySpace(num_classes, smoothing)
    if name == "mcr2":
        from utils.mcr2 import MCR2Space
        options = {k: state[k] for k in ("feature_dim", "eps2", "gam1", "gam2", "n_components")}
        shape = (num_classes, options["feature_dim"], min(options["n_components"], options["feature_dim"]))
        if not isinstance(state["bases"], torch.Tensor) or tuple(state["bases"].shape) != shape:
            raise ValueError(f"its MCR2 class subspaces are not a tensor of shape {shape}")
        return MCR2Space(num_classes, bases=state["bases"], **options)
    targets = state["targets"]
    if not isinstance(targets, torch.Tensor) or not targets.is_floating_point() \
            or targets.shape[:1] != (num_classes,):
        raise ValueError(f"its {name} targets are not a float tensor of {num_classes} class targets")
    return TargetSpace(name, check_targets(targets.float().cpu().numpy(), f"its {name} label space"))
