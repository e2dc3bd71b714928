"""The paper's attack loop re-created, one image at a time, to time it and to check ours against it.

    accuracy = paper_fgsm(model, space, images, labels, eps=0.1)                 # normalised units
    accuracy = paper_iterative(model, space, images, labels, eps=0.1, steps=5)
    accuracy = paper_fgsm(model, space, images, labels, eps=0.1, targets=targets)  # targeted

What BoyuanChen/label_representations' attack.py and utils/attack_{category,highdim}_utils.py do,
kept here on purpose (timings and the `--paper_protocol` cross-check depend on it):
- a DataLoader of batch size 1 yields images already normalised by (mean, std); we normalise with
  the model's own constants and feed the network without our wrapper's normalisation
  (model.trunk then model.head), so eps and the clamp are in normalised units, as in the paper;
- one forward pass; an image whose prediction is wrong is skipped and counts as a failure; at
  eps 0 a correct image counts as correct without an attack;
- the loss of that output (cross-entropy for category, SmoothL1 to the class's target otherwise;
  targeted: to the target class's target), `model.zero_grad()`, `loss.backward()`: parameter
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
import torch


def _normalised_net(model, images01):
    """(network on normalised images, normalised images): the paper's view of our model."""
    model.eval()
    net = torch.nn.Sequential(model.trunk, model.head)
    return net, (images01 - model.mean) / model.std


def _attacked(net, space, images, labels):
    """The paper's per-image prologue: one image at a time (batch size 1, input gradient on), one
    forward pass; yields (index, image, label, output) for the images classified correctly, skips
    the others (they count as failures)."""
    for i in range(len(images)):
        data, label = images[i:i + 1].clone().requires_grad_(True), labels[i:i + 1]
        output = net(data)
        if space.decode(output).item() == label.item():
            yield i, data, label, output


def _goal(labels, targets, i):
    return (targets if targets is not None else labels)[i:i + 1]


def paper_fgsm(model, space, images01, labels, eps, targets=None):
    """images01: (N, 3, H, W) float in [0, 1]; labels, targets: (N,) class ids; eps in normalised
    units. Returns the robust accuracy of the paper's per-image FGSM."""
    net, images = _normalised_net(model, images01)
    direction = -1 if targets is not None else 1
    correct = 0
    for i, data, label, output in _attacked(net, space, images, labels):
        if eps == 0:
            correct += 1
            continue
        loss = space.loss(output, _goal(labels, targets, i)).mean()
        net.zero_grad()
        loss.backward()
        perturbed = data + direction * eps * data.grad.sign()
        perturbed = torch.clamp(perturbed, data.min().item(), data.max().item())
        correct += int(space.decode(net(perturbed)).item() == label.item())
    return correct / len(images)


def paper_iterative(model, space, images01, labels, eps, steps=5, targets=None):
    """The paper's basic iterative attack with its gradient accumulation; alpha = eps / steps.
    Arguments as paper_fgsm; returns the robust accuracy."""
    net, images = _normalised_net(model, images01)
    alpha = (-1 if targets is not None else 1) * eps / steps
    correct = 0
    for i, data, label, output in _attacked(net, space, images, labels):
        if eps == 0:
            correct += 1
            continue
        original = data.detach().clone()
        goal = _goal(labels, targets, i)
        for _ in range(steps):
            loss = space.loss(output, goal).mean()
            net.zero_grad()
            loss.backward()  # adds to data.grad: it is never cleared between steps
            total = torch.clamp(data.data + alpha * data.grad.sign() - original, -eps, eps)
            data.data = original + total
            output = net(data)
        correct += int(space.decode(output).item() == label.item())
    return correct / len(images)
