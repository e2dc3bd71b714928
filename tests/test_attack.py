"""Attacks: agreement with torchattacks and with the paper's loop, their properties, attack.py.

The models (conftest's `category` and `highdim`) are trained in-process on the tiny colour CIFAR;
attack.py is run end to end on a decoder-head checkpoint from train.py below.
"""
import errno
import filecmp
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import attack
from architecture import ARCHITECTURES, build_model, fold_batch_norm
from bench.paper_attack import paper_fgsm, paper_iterative
from cifar import load_cifar, to_float
from conftest import REPO, last_json, make_cifar10, run_script, unstamped
from utils import preempt
from utils.attacks import NOISE_BLOCK, Shared, draw_targets, run_attack, start_noise
from utils.constants import ATTACKS
from utils.errors import UsageError, call_cli, run_cli
from utils.labelspace import CategorySpace
from utils.runs import ATTACK_EXAMPLES, ATTACK_RESULTS, LAYOUT_TEXT, file_sha256, run_directory
from utils.training import evaluate

EPS1, EPS8 = 1 / 255, 8 / 255
N = 40  # test images per property check
# One thread: on a CPU shared with other jobs, two threads each stall waiting for the other.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_set(tiny):
    targets = draw_targets(tiny.test_labels, 10, seed=0)
    return to_float(tiny.test_images[:N]), tiny.test_labels[:N], targets[:N]


# ---------------------------------------------------------------------------------------------
# Building blocks

def test_targets_are_other_classes_fixed_per_test_index():
    labels = torch.arange(1000) % 10
    targets = draw_targets(labels, 10, seed=7)
    assert (targets != labels).all() and targets.min() >= 0 and targets.max() <= 9
    assert torch.equal(targets, draw_targets(labels, 10, seed=7))
    assert not torch.equal(targets, draw_targets(labels, 10, seed=8))
    counts = torch.bincount((targets - labels) % 10, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 70  # uniform over the 9 other classes


def test_random_start_depends_only_on_seed_restart_and_index():
    everything = start_noise(torch.arange(600), (3, 4, 4), seed=1, restart=0)
    some = torch.tensor([5, 300, 599, 2])
    assert torch.equal(start_noise(some, (3, 4, 4), seed=1, restart=0), everything[some])
    assert everything.min() >= -1 and everything.max() <= 1 and everything.abs().mean() > 0.4
    # uniform over the whole ball: both signs, out to its faces
    assert everything.min() < -0.99 and everything.max() > 0.99 and abs(everything.mean()) < 0.02
    assert not torch.equal(start_noise(some, (3, 4, 4), seed=1, restart=1), everything[some])
    # each block of NOISE_BLOCK images draws its own: image 256 does not start where image 0 does
    assert not torch.equal(everything[NOISE_BLOCK], everything[0])
    assert not torch.equal(start_noise(some, (3, 4, 4), seed=2, restart=0), everything[some])  # --seed's


def test_presets_take_the_documented_defaults():
    """README: 10 steps of 2.5 * eps / steps (pixel), 5 of eps / steps (paper); FGSM one step of
    eps; PGD alone starts at random and restarts."""
    from utils.constants import Schedule, schedule
    assert schedule("pgd", 0.04, restarts=3) == Schedule("pgd", 10, 2.5 * 0.04 / 10, True, 3)
    assert schedule("iterative", 0.04, restarts=3) == Schedule("iterative", 10, 2.5 * 0.04 / 10, False, 1)
    assert schedule("iterative", 0.1, "paper") == Schedule("iterative", 5, 0.1 / 5, False, 1)
    assert schedule("fgsm", 0.04, steps=7, step_size=1.0, restarts=3) == Schedule("fgsm", 1, 0.04, False, 1)


def test_unset_attacks_and_epsilons_are_the_readmes():
    """attack.py without --attacks and --epsilons runs every attack, untargeted and targeted, at the
    README's eps 0 1/255 2/255 4/255 8/255; with --paper_protocol FGSM and the iterative attack at
    the paper's 0, .05, ... .3 (normalised units)."""
    parser = attack.build_parser()
    protocol, attacks, epsilons, modes = attack.requested_settings(parser.parse_args([]))
    assert (protocol, attacks, modes) == ("pixel", ["fgsm", "iterative", "pgd"], [False, True])
    assert epsilons == [(f"{k}/255" if k else "0", k / 255) for k in (0, 1, 2, 4, 8)]
    protocol, attacks, epsilons, modes = attack.requested_settings(parser.parse_args(["--paper_protocol"]))
    assert (protocol, attacks, modes) == ("paper", ["fgsm", "iterative"], [False, True])
    assert epsilons == [(label, float(label)) for label in ("0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3")]


def test_unknown_attack_and_protocol_are_usage_errors(category, test_set):
    from utils.errors import UsageError
    images, labels, _ = test_set
    with pytest.raises(UsageError, match="unknown attack 'cw'; choose from fgsm, iterative, pgd"):
        run_attack(*category, images, labels, "cw", EPS8)
    with pytest.raises(UsageError, match="unknown protocol"):
        run_attack(*category, images, labels, "fgsm", EPS8, protocol="normalised")


@pytest.fixture(scope="module")
def untrained():
    """An untrained category model and 6 random images labelled with its own predictions, so that
    every image is attacked: for the mechanics of an attack, not its strength."""
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)).eval(), CategorySpace(10)
    images = torch.rand(6, 3, 32, 32)
    labels = run_attack(model, space, images, torch.zeros(6, dtype=torch.long), "fgsm", 0.0,
                        keep_images=True)["clean_pred"]
    return model, space, images, labels


def test_pgd_starts_from_seeded_uniform_noise_filling_the_eps_ball(untrained):
    """PGD's first point is clamp(clean + start_noise * eps, 0, 1) (Madry et al.'s random start):
    with a negligible step the attack ends there. The iterative attack starts at the clean image."""
    model, space, images, labels = untrained
    start = (images + EPS8 * start_noise(torch.arange(6), (3, 32, 32), seed=3, restart=0)).clamp(0, 1)
    for name, expected in (("pgd", start), ("iterative", images)):
        result = run_attack(model, space, images, labels, name, EPS8, steps=1, step_size=1e-7, seed=3,
                            keep_images=True)
        assert (result["adversarial"] - expected).abs().max() < 1e-6, name


def test_attack_images_alone_keys_its_random_starts_by_position(untrained):
    """attack_images called without `positions` (a notebook's, on a set of its own) takes the images
    for the whole set, 0 to N - 1, as run_attack passes them for one batch; it raised a TypeError
    (None[todo]) at PGD's random start."""
    from utils.attacks import attack_images, threat
    from utils.constants import schedule
    model, space, images, labels = untrained
    plan = schedule("pgd", EPS8, "pixel", 1, 1e-7, 1)
    box = threat(images, EPS8, plan, "pixel", model.model_args["mean"], model.model_args["std"])
    folded = fold_batch_norm(model)
    alone, _ = attack_images(folded, space, images, labels, plan, box, seed=3)
    start = (images + EPS8 * start_noise(torch.arange(6), (3, 32, 32), seed=3, restart=0)).clamp(0, 1)
    assert (alone - start).abs().max() < 1e-6
    given, _ = attack_images(folded, space, images, labels, plan, box, positions=torch.arange(6), seed=3)
    assert torch.equal(alone, given)


def test_pgd_takes_its_first_gradient_at_the_clamped_random_start(untrained):
    """The random start is put back into [0, 1] before the first step, which starts there: on
    images of saturated pixels (0 or 1) half of the start noise points out of range."""
    from utils.attacks import gradient_sign
    model, space, images, _ = untrained
    saturated = (images > 0.5).to(images.dtype)
    labels = run_attack(model, space, saturated, torch.zeros(6, dtype=torch.long), "fgsm", 0.0,
                        keep_images=True)["clean_pred"]
    start = (saturated + EPS8 * start_noise(torch.arange(6), (3, 32, 32), seed=3, restart=0)).clamp(0, 1)
    step = EPS8 / 4
    moved = start + step * gradient_sign(fold_batch_norm(model), space, start, labels)
    expected = torch.minimum(torch.maximum(moved, (saturated - EPS8).clamp(min=0)), (saturated + EPS8).clamp(max=1))
    result = run_attack(model, space, saturated, labels, "pgd", EPS8, steps=1, step_size=step, seed=3,
                        keep_images=True)
    assert result["attacked"] == 6
    assert ((result["adversarial"] - expected).abs() < 1e-6).float().mean() > 0.999


def test_the_papers_step_size_is_in_normalised_units_as_its_eps(untrained):
    """Under protocol "paper" a step of step_size moves channel c by step_size * std_c in pixels,
    as eps's radius is eps * std_c: a step of step_size pixels (about 5 times as long) went past
    the eps-ball's face in one step, and its clamp hid that from every check of the radius."""
    model, space, images, labels = untrained
    std = torch.tensor(model.model_args["std"])
    result = run_attack(model, space, images, labels, "iterative", 0.1, protocol="paper", steps=1,
                        step_size=0.02, keep_images=True)
    assert result["attacked"] == 6
    moved = (result["adversarial"] - images).abs()
    assert torch.allclose(moved.amax((0, 2, 3)), 0.02 * std, rtol=1e-4)
    assert torch.allclose(moved.amin((0, 2, 3)), 0.02 * std, rtol=1e-4)  # every pixel takes the step


def test_target_success_counts_only_the_attacked_images(untrained):
    """The targeted success rate is over the images classified correctly before the attack: an
    image misclassified from the start as its own target is not attacked and is no hit."""
    model, space, images, predicted = untrained
    labels = torch.cat([predicted[:3], (predicted[3:] + 1) % 10])   # the last 3 misclassified ...
    targets = torch.cat([(predicted[:3] + 1) % 10, predicted[3:]])  # ... as their targets
    result = run_attack(model, space, images, labels, "fgsm", 0.0, targets=targets)
    assert result["attacked"] == 3 and result["target_success"] == 0


def test_a_setting_that_attacks_nothing_is_refused(untrained):
    """run_attack's restarts 0 (read as "no restart"), steps below 1 and a negative eps attacked
    nothing and reported the clean accuracy as robust (restarts 0: 0.44 on 100 test images of a
    category model that PGD takes to 0.09); steps 0 ran the default 10; a negative step size
    descended the loss (0.42)."""
    model, space, images, labels = untrained
    for options, message in ((dict(restarts=0), "restarts 0 must be a whole number of at least 1"),
                             (dict(restarts=1.5), "restarts 1.5 must be a whole number of at least 1"),
                             (dict(steps=0), "steps 0 must be a whole number of at least 1"),
                             (dict(steps=-1), "steps -1 must be a whole number of at least 1"),
                             (dict(step_size=-EPS1), f"step size {-EPS1} must be positive"),
                             (dict(step_size=0.0), "step size 0.0 must be positive"),
                             (dict(eps=-EPS8), f"eps {-EPS8} must be at least 0")):
        with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
            run_attack(model, space, images, labels, "pgd", **{"eps": EPS8, **options})
    assert run_attack(model, space, images, labels, "pgd", EPS8, steps=1, restarts=1)["restarts"] == 1
    # attack.py's eps 0 settings carry a step size of 0
    assert run_attack(model, space, images, labels, "pgd", 0.0, step_size=0.0)["attacked"] == 6


def test_a_target_that_is_the_images_own_label_is_refused(untrained):
    """Targets drawn over all classes (torch.randint, 21 of 200 images their own label) sent the
    attack down the true class's loss and counted such an image, unattacked, as a hit."""
    model, space, images, labels = untrained
    targets = (labels + 1) % 10
    own = targets.clone()
    own[2] = labels[2]
    message = "targets must be one class per image, each another than the image's label"
    for wrong in (own, targets[:3]):
        with pytest.raises(UsageError, match=f"^{re.escape(message)}"):
            run_attack(model, space, images, labels, "fgsm", EPS8, targets=wrong)
    assert run_attack(model, space, images, labels, "fgsm", EPS8, targets=targets)["attacked"] == 6


def test_an_attack_leaves_a_training_model_training():
    """run_attack attacks an eval-mode copy with its batch norms folded, but it switched the
    caller's model to eval mode too: a caller attacking between training steps went on training
    with frozen batch statistics. The attack is the eval model's either way."""
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)).train(), CategorySpace(10)
    images, labels = torch.rand(4, 3, 32, 32), torch.arange(4)
    training = run_attack(model, space, images, labels, "fgsm", EPS8, keep_images=True)
    assert model.training
    evaluating = run_attack(model.eval(), space, images, labels, "fgsm", EPS8, keep_images=True)
    assert torch.equal(training["clean_pred"], evaluating["clean_pred"])
    assert torch.equal(training["adversarial"], evaluating["adversarial"])


def test_float64_images_are_attacked_in_the_models_dtype():
    """Images made with numpy (torch.from_numpy(x / 255.), float64) ended in a RuntimeError traceback
    ('Input type (double) and bias type (float) should be the same'): uint8 images alone were cast."""
    from cifar import to_float
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)).eval(), CategorySpace(10)
    images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 10
    reference = run_attack(model, space, to_float(images), labels, "pgd", EPS8, keep_images=True)
    result = run_attack(model, space, to_float(images, torch.float64), labels, "pgd", EPS8, keep_images=True)
    assert torch.equal(result["adversarial"], reference["adversarial"])
    assert result["robust_acc"] == reference["robust_acc"]


def test_a_bfloat16_model_is_attacked_within_eps():
    """A caller's model.bfloat16(): the images and the eps-ball's arithmetic were in bf16, whose
    steps near 1 are 1/128, so PGD at eps 1/255 moved pixels up to 1.5/255. They are float32; the
    model computes in bf16."""
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)).eval().bfloat16(), CategorySpace(10)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = space.decode(model(images.bfloat16() / 255))  # every image attacked
    for name in ("fgsm", "pgd"):
        result = run_attack(model, space, images, labels, name, 1 / 255, keep_images=True)
        assert result["adversarial"].dtype == torch.float32
        assert (result["adversarial"] - images / 255).abs().max() <= 1 / 255 + 1e-6
        assert result["attacked"] == 16 and result["robust_acc"] < 1


def test_an_attack_in_a_callers_inference_mode():
    """run_attack in a notebook cell's `with torch.inference_mode()` (README's snippet holds one) ended
    in a RuntimeError traceback ('element 0 of tensors does not require grad'): no_grad was lifted
    for the input gradients, inference mode was not. Its result is the one outside, for images made
    in that mode too."""
    from cifar import to_float
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)).eval(), CategorySpace(10)
    images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 10
    reference = run_attack(model, space, images, labels, "pgd", EPS8, keep_images=True)
    with torch.inference_mode():
        for given in (images, to_float(images)):
            result = run_attack(model, space, given, labels, "pgd", EPS8, keep_images=True)
            assert torch.equal(result["adversarial"], reference["adversarial"])
            assert result["robust_acc"] == reference["robust_acc"]


# ---------------------------------------------------------------------------------------------
# Cross-checks

def torchattacks_robust_acc(model, attack, images, labels, targets=None):
    if targets is not None:  # one call on the whole set, so the map can ignore its arguments
        attack.set_mode_targeted_by_function(lambda images, labels: targets)
    adversarial = attack(images, labels)
    with torch.no_grad():
        clean_ok = model(images).argmax(1) == labels
        adv_ok = model(adversarial).argmax(1) == labels
    return (clean_ok & adv_ok).float().mean().item(), adversarial


@pytest.mark.parametrize("name, eps, targeted", [("fgsm", 4 / 255, False), ("fgsm", EPS8, False),
                                                 ("fgsm", EPS8, True), ("iterative", EPS8, False),
                                                 ("iterative", 4 / 255, True)])
def test_same_robust_accuracy_as_torchattacks(category, test_set, name, eps, targeted):
    """FGSM, and PGD with its random start disabled (our `iterative` preset), on the same images."""
    torchattacks = pytest.importorskip("torchattacks")
    model, space = category
    images, labels, targets = test_set
    steps, alpha = 5, 2.5 * eps / 5
    # run_attack attacks the batch-norm-folded network (same function up to rounding, which can
    # flip the sign of near-zero gradient entries): torchattacks gets that network too, so the
    # comparison is of the attack algorithms. test_data_and_models checks the folding itself.
    folded = fold_batch_norm(model)
    reference = (torchattacks.FGSM(folded, eps=eps) if name == "fgsm"
                 else torchattacks.PGD(folded, eps=eps, alpha=alpha, steps=steps, random_start=False))
    theirs, their_images = torchattacks_robust_acc(folded, reference, images, labels,
                                                   targets if targeted else None)
    ours = run_attack(model, space, images, labels, name, eps, steps=steps,
                      targets=targets if targeted else None, keep_images=True)
    assert abs(ours["robust_acc"] - theirs) <= 0.005
    attacked = ours["clean_pred"] == labels
    same = (ours["adversarial"][attacked] - their_images[attacked]).abs() < 1e-6
    assert same.float().mean() > 0.999


def test_paper_protocol_matches_the_papers_loop(trained, test_set):
    """FGSM and a 1-step iterative attack (where gradient accumulation cannot differ) agree with
    the paper's one-image-at-a-time loop, untargeted and targeted, in normalised units."""
    model, space = trained
    images, labels, targets = (t[:20] for t in test_set)  # the paper's loop is slow
    for eps in (0.05, 0.2):
        for chosen in (None, targets):
            ours = run_attack(model, space, images, labels, "fgsm", eps, protocol="paper", targets=chosen)
            assert ours["robust_acc"] == paper_fgsm(model, space, images, labels, eps, targets=chosen)
    ours = run_attack(model, space, images, labels, "iterative", 0.1, protocol="paper", steps=1)
    assert ours["robust_acc"] == paper_iterative(model, space, images, labels, 0.1, steps=1)
    assert paper_fgsm(model, space, images, labels, 0) == ours["clean_acc"]


def test_the_papers_loops_zero_fill_the_parameters_gradients():
    """The paper's `model.zero_grad()` ran under torch 1.x, which zero-filled the parameters'
    gradients (torch 2's frees them, and the next backward makes new ones, fewer kernels on a
    GPU): every backward of the loops adds into the same tensors, each time one image's gradient."""
    space = CategorySpace(10)
    torch.manual_seed(0)
    model = build_model("resnet32", space.output_shape).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        labels = space.decode(model(images))  # each image correct, so attacked
    weight, grads = next(model.head.parameters()), []
    weight.register_post_accumulate_grad_hook(lambda p: grads.append((p.grad, p.grad.clone())))
    paper_fgsm(model, space, images, labels, 0.1)
    net = torch.nn.Sequential(model.trunk, model.head)
    for i, (_, value) in enumerate(grads):
        one = net((images[i:i + 1] - model.mean) / model.std)
        torch.testing.assert_close(value, torch.autograd.grad(
            space.adversarial_loss(one, labels[i:i + 1]).mean(), weight)[0])
    paper_iterative(model, space, images, labels, 0.1, steps=2)
    assert len(grads) == 3 + 3 * 2 and all(grad is grads[0][0] for grad, _ in grads)


def test_the_papers_iterative_loop_steps_along_its_summed_gradients(category, test_set):
    """bench/paper_attack.py's iterative attack as the paper's: steps of eps / steps in normalised
    units, step k along the sign of the sum of the input gradients of steps 0..k (the paper never
    cleared them), the total clamped to [-eps, eps]. The 1-step comparison above cannot tell."""
    import copy
    model, space = category
    images, labels, _ = test_set
    i = int((space.decode(model(images)) == labels).nonzero()[0])  # the loop attacks correct images
    net = torch.nn.Sequential(model.trunk, model.head)
    inputs, recorded = [], copy.deepcopy(model)
    recorded.trunk = torch.nn.Sequential(torch.nn.Identity(), model.trunk)
    recorded.trunk[0].register_forward_hook(lambda m, args, out: inputs.append(out.detach().clone()))
    eps, steps = 0.1, 3
    paper_iterative(recorded, space, images[i:i + 1], labels[i:i + 1], eps, steps=steps)
    assert len(inputs) == steps + 1
    original, total = inputs[0], torch.zeros_like(inputs[0])
    for before, after in zip(inputs, inputs[1:]):
        x = before.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(space.adversarial_loss(net(x), labels[i:i + 1]).mean(), x)
        total += gradient
        expected = original + (before + eps / steps * total.sign() - original).clamp(-eps, eps)
        assert ((after - expected).abs() > 1e-6).float().mean() < 1e-3
    assert (inputs[1] - original).abs().max().item() == pytest.approx(eps / steps, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Properties, for a category and a high-dimensional model

def test_eps_zero_is_clean_accuracy(trained, tiny):
    model, space = trained
    clean = evaluate(model, space, tiny.test_images, tiny.test_labels)["acc"]
    for name in ATTACKS:
        result = run_attack(model, space, tiny.test_images, tiny.test_labels, name, 0.0)
        assert result["robust_acc"] == result["clean_acc"] == pytest.approx(clean)


def test_no_rate_where_nothing_was_attacked(trained, test_set):
    """A targeted attack on images all misclassified reported a success rate of 0.0 (averaged by
    report.py as if measured), and eps 0 an images/s of ~1e5 (no attack ran)."""
    images, labels, _ = test_set
    pred = run_attack(*trained, images, labels, "fgsm", 0.0, keep_images=True)["clean_pred"]
    never = (pred + 1) % 10  # labels the model never predicts: no image is attacked
    result = run_attack(*trained, images, never, "fgsm", EPS8, targets=(never + 1) % 10)
    assert result["attacked"] == 0 and result["target_success"] is None
    assert run_attack(*trained, images, labels, "pgd", 0.0)["images_per_s"] is None


def test_stronger_attacks_and_larger_eps_lower_robust_accuracy(trained, test_set):
    model, space = trained
    images, labels, _ = test_set
    pgd1 = run_attack(model, space, images, labels, "pgd", EPS1, steps=5)["robust_acc"]
    pgd8 = run_attack(model, space, images, labels, "pgd", EPS8, steps=5)["robust_acc"]
    fgsm8 = run_attack(model, space, images, labels, "fgsm", EPS8)["robust_acc"]
    clean = run_attack(model, space, images, labels, "fgsm", 0.0)["robust_acc"]
    assert pgd8 < pgd1 <= clean
    assert pgd8 <= fgsm8 + 2 / N  # PGD is at most FGSM, up to the noise of a couple of images


@pytest.mark.parametrize("protocol", ["pixel", "paper"])
def test_adversarial_images_stay_within_eps_and_range(trained, test_set, protocol):
    model, space = trained
    images, labels, targets = test_set
    images, labels, targets = images[:16], labels[:16], targets[:16]
    std = torch.tensor(model.model_args["std"]).view(1, 3, 1, 1)
    mean = torch.tensor(model.model_args["mean"]).view(1, 3, 1, 1)
    eps = EPS8 if protocol == "pixel" else 0.1
    radius = eps * (std if protocol == "paper" else torch.ones_like(std))
    for name in ATTACKS:
        for chosen in (None, targets):
            result = run_attack(model, space, images, labels, name, eps, protocol=protocol, steps=3,
                                restarts=2, targets=chosen, keep_images=True)
            adversarial = result["adversarial"]
            assert ((adversarial - images).abs() <= radius + 1e-6).all()
            moved = (adversarial != images).flatten(1).any(1)
            assert torch.equal(moved, (result["clean_pred"] == labels) & moved)  # only correct ones
            assert moved.sum() >= result["attacked"] // 2
            if protocol == "pixel":
                assert adversarial.min() >= 0 and adversarial.max() <= 1
            elif name == "fgsm":  # the paper's clamp: each normalised image's own min and max
                z, z_adv = (images - mean) / std, (adversarial - mean) / std
                assert (z_adv.amin((1, 2, 3)) >= z.amin((1, 2, 3)) - 1e-5).all()
                assert (z_adv.amax((1, 2, 3)) <= z.amax((1, 2, 3)) + 1e-5).all()
                # scalars over all channels: a channel may leave its own range, above and below (not
                # a per-channel clamp)
                assert (z_adv > z.amax((2, 3), keepdim=True) + 1e-5).any()
                assert (z_adv < z.amin((2, 3), keepdim=True) - 1e-5).any()
            else:  # the paper's iterative attack has no range clamp (its line is commented out)
                assert adversarial.min() < 0 or adversarial.max() > 1


def test_targeted_attacks_hit_their_targets_more_often_than_chance(trained, test_set):
    model, space = trained
    images, labels, targets = test_set
    # 20 steps: after 10 the speech model hit 8-10 of 40 targets (by thread count), at 2x chance
    result = run_attack(model, space, images, labels, "pgd", 16 / 255, steps=20, step_size=2 / 255,
                        targets=targets)
    chance = 1 / space.num_classes  # a prediction drawn at random hits the target this often
    assert result["attacked"] >= 0.8 * N and result["target_success"] > 2 * chance
    assert run_attack(model, space, images, labels, "pgd", 0.0, targets=targets)["target_success"] == 0


def test_target_success_is_the_hits_among_the_attacked_images(category, test_set):
    """The targeted success rate is the number of attacked images that reach their target over the
    number attacked, not over all the images: with 10 of 40 misclassified before the attack (not
    attacked), a rate over all 40 would be 3/4 of it."""
    model, space = category
    images, labels, _ = test_set
    clean = run_attack(model, space, images, labels, "fgsm", 0.0, keep_images=True)["clean_pred"]
    # the first 10 labelled as a class the model does not predict, the other 30 as it does
    labels = torch.cat([(clean[:10] + 1) % 10, clean[10:]])
    targets = (labels + 1 + torch.arange(N) % 9) % 10         # another class than the label
    result = run_attack(model, space, images, labels, "pgd", 16 / 255, steps=10, step_size=2 / 255,
                        targets=targets, keep_images=True)
    hits = int((result["adv_pred"][10:] == targets[10:]).sum())
    assert result["attacked"] == N - 10 and 0 < hits
    assert result["target_success"] == hits / (N - 10)


def test_each_class_counts_its_images_and_those_still_classified_as_it(category, highdim, test_set):
    """Per class id, run_attack counts the evaluated images of the class and those of them classified
    as it before and after the attack, over every batch (40 images in 3): they sum to the totals,
    robust accuracy's numerator and N, so a report pools seeds exactly. A transfer's are the
    judge's: images it misclassified clean count as failures, and its reading of the crafted ones."""
    images, labels, _ = test_set
    for model, space, judge in ((*highdim, None), (*category, highdim)):
        result = run_attack(model, space, images, labels, "pgd", EPS8, steps=3, batch_size=16,
                            keep_images=True, judge=judge)
        survived = [clean == label == adversarial for clean, adversarial, label
                    in zip(result["clean_pred"].tolist(), result["adv_pred"].tolist(), labels.tolist())]
        assert result["class_images"] == [labels.tolist().count(c) for c in range(10)]
        assert result["class_robust"] == [sum(ok and label == c for ok, label in zip(survived, labels.tolist()))
                                          for c in range(10)]
        robust = sum(result["class_robust"])
        assert sum(result["class_images"]) == N and robust == round(result["robust_acc"] * N)
        assert 0 < robust < result["attacked"]  # some images fooled, some not: a count that can be wrong


def test_batch_size_does_not_change_the_result(trained, test_set):
    model, space = trained
    images, labels, targets = test_set
    runs = [run_attack(model, space, images, labels, "pgd", EPS8, steps=3, restarts=2, targets=targets,
                       seed=5, batch_size=batch_size, keep_images=True) for batch_size in (7, 500)]
    assert runs[0]["robust_acc"] == runs[1]["robust_acc"]
    assert runs[0]["target_success"] == runs[1]["target_success"]
    assert torch.equal(runs[0]["adv_pred"], runs[1]["adv_pred"])
    assert ((runs[0]["adversarial"] - runs[1]["adversarial"]).abs() > 1e-6).float().mean() < 1e-3


def test_a_stop_request_ends_an_attack_between_two_steps(trained, test_set):
    """A preemption waited for the end of the batch: a long PGD (--steps 1000 on 500 images) ran
    on past SLURM's grace time, and a SIGTERM did not stop it."""
    model, space = trained
    images, labels, _ = test_set
    polls = []

    def stop():
        polls.append(1)
        return len(polls) > 3
    assert run_attack(model, space, images, labels, "pgd", EPS8, steps=1000, stop=stop) is None
    assert len(polls) == 4  # once before the batch, then before each step: stopped at the third
    assert run_attack(model, space, images, labels, "pgd", EPS8, steps=2, stop=lambda: False) is not None


def test_a_restart_only_attacks_the_images_earlier_ones_did_not_get_past(trained, test_set):
    """Restart 0 is the same with 1 or 3 restarts (its noise is keyed by seed, restart and index):
    an image it fools keeps that adversarial image, the others get two more tries."""
    model, space = trained
    images, labels, targets = test_set
    once, thrice = (run_attack(model, space, images, labels, "pgd", 2 / 255, steps=2, restarts=r, seed=4,
                               keep_images=True) for r in (1, 3))
    fooled = (once["clean_pred"] == labels) & (once["adv_pred"] != labels)
    assert 0 < fooled.sum() < (once["clean_pred"] == labels).sum()  # restarts have work to do
    assert (thrice["adv_pred"][fooled] != labels[fooled]).all()
    assert torch.equal(thrice["adversarial"][fooled], once["adversarial"][fooled])
    assert thrice["robust_acc"] <= once["robust_acc"]
    # Targeted, an image restart 0 misclassified as another class than its target (here 10 of 40)
    # is tried again, and stays misclassified whatever the later restarts do: robust accuracy is
    # the worst case over restarts (an image a later restart left correct counted as robust).
    once, thrice = (run_attack(model, space, images, labels, "pgd", EPS8, steps=1, restarts=r, seed=4,
                               targets=targets, keep_images=True) for r in (1, 3))
    strayed = (once["clean_pred"] == labels) & (once["adv_pred"] != labels) & (once["adv_pred"] != targets)
    assert strayed.any()
    assert (thrice["adv_pred"][strayed] != labels[strayed]).all()
    # tried again: a later restart that misclassifies it too replaces its image
    assert (thrice["adversarial"][strayed] != once["adversarial"][strayed]).flatten(1).any(1).any()
    assert thrice["robust_acc"] <= once["robust_acc"]
    assert thrice["target_success"] >= once["target_success"]


def test_a_run_shares_clean_work_across_settings_without_changing_a_result(trained, test_set):
    """attack.py passes one Shared to every setting: FGSM at every eps reuses one gradient at the
    clean images, the iterative attack takes it as its first step; every result is that of a
    fresh call, adversarial images included."""
    model, space = trained
    images, labels, targets = test_set
    shared, calls = Shared(), []
    for chosen in (None, targets):
        for name, eps in (("fgsm", EPS1), ("fgsm", EPS8), ("iterative", EPS8), ("pgd", EPS8)):
            calls.append((name, eps, chosen))
    for name, eps, chosen in calls:
        kwargs = dict(targets=chosen, steps=3, seed=2, batch_size=16, keep_images=True)
        alone = run_attack(model, space, images, labels, name, eps, **kwargs)
        reused = run_attack(model, space, images, labels, name, eps, shared=shared, **kwargs)
        assert reused["robust_acc"] == alone["robust_acc"] and reused["attacked"] == alone["attacked"]
        assert torch.equal(reused["adversarial"], alone["adversarial"]), (name, eps, chosen is None)
    assert len(shared.clean) == 3 and len(shared.signs) == 6  # 3 batches; x 2 goals
    assert len(shared.networks) == 1
    assert all(sign.dtype == torch.int8 for sign in shared.signs.values())


def test_margin_objective_attacks_the_decision(trained, test_set):
    """On a target model climbing the decoder's margin breaks more images than climbing the training
    loss (the SmoothL1 to the true target need not move the decision); on a category model the two
    are close. Targeted, it reaches the targets; every image stays within eps."""
    model, space = trained
    images, labels, targets = test_set
    runs = {objective: run_attack(model, space, images, labels, "pgd", EPS8, steps=5, seed=1,
                                  objective=objective, keep_images=True)
            for objective in ("loss", "margin")}
    loss, margin = runs["loss"]["robust_acc"], runs["margin"]["robust_acc"]
    if space.name == "category":  # cross-entropy already follows the decision: the two are close
        assert abs(margin - loss) <= 0.1
    else:                         # here 0.1 with the loss, 0.025 with the margin
        assert margin <= loss - 2 / N
    assert runs["margin"]["robust_acc"] < runs["margin"]["clean_acc"] - 0.2
    assert ((runs["margin"]["adversarial"] - images).abs() <= EPS8 + 1e-6).all()
    hit = run_attack(model, space, images, labels, "pgd", 16 / 255, steps=10, step_size=2 / 255,
                     targets=targets, objective="margin")
    assert hit["target_success"] > 2 / space.num_classes
    with pytest.raises(UsageError, match="unknown objective 'cw'"):
        run_attack(model, space, images, labels, "pgd", EPS8, objective="cw")


def test_channels_last_gives_the_same_attack_results(trained, test_set):
    model, space = trained
    images, labels, targets = test_set
    for name, chosen in (("fgsm", None), ("pgd", targets)):
        plain, last = (run_attack(model, space, images, labels, name, EPS8, targets=chosen, steps=3,
                                  channels_last=layout, keep_images=True) for layout in (False, True))
        assert (plain["adv_pred"] != last["adv_pred"]).sum() <= 1  # float rounding may flip one
        assert abs(plain["robust_acc"] - last["robust_acc"]) <= 1 / N


# ---------------------------------------------------------------------------------------------
# attack.py

def script_flags(cifar10_dir, base_dir, label_dir, *extra):
    return [str(a) for a in ("--model", "resnet32", "--dataset", "cifar10", "--label", "speech",
                             "--seed", "3", "--data_dir", cifar10_dir, "--label_dir", label_dir,
                             "--base_dir", base_dir, "--device", "cpu", *extra)]


@pytest.fixture(scope="module")
def speech_run(cifar10_dir, label_dir, tmp_path_factory):
    """A checkpoint with the paper's decoder head, saved by train.py (barely trained: 10 images)."""
    base = tmp_path_factory.mktemp("attack_runs")
    run_script("train.py", "--model", "resnet32", "--dataset", "cifar10", "--label", "speech",
               "--seed", "3", "--data_dir", cifar10_dir, "--label_dir", label_dir, "--base_dir", base,
               "--valid_size", "290", "--epochs", "1", "--batch_size", "10", "--device", "cpu",
               env=ONE_THREAD)
    return base, base / "cifar10" / "seed3" / "resnet32" / "model_speech"


def copied_checkpoint(speech_run, folder):
    """`speech_run`'s best checkpoint copied into `folder`: a --checkpoint whose run directory is
    the test's own (its attack_results.json starts empty)."""
    checkpoint = folder / "speech_seed3_resnet32_best_model.pth"
    shutil.copy(speech_run[1] / checkpoint.name, checkpoint)
    return checkpoint


def one_fgsm(checkpoint, cifar10_dir, label_dir, targeted="no"):
    """attack.py's flags for one FGSM setting, 8/255, on 5 test images of `checkpoint`, no figure."""
    return ["--checkpoint", str(checkpoint), "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
            "--attacks", "fgsm", "--epsilons", "8/255", "--targeted", targeted, "--num_images", "5",
            "--examples", "0", "--device", "cpu"]


def call_main(capsys, argv):
    summary = attack.main(argv)
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1]) == summary
    return summary, err


def test_a_callers_namespace_is_left_as_it_was(speech_run, cifar10_dir, tmp_path, monkeypatch, capsys):
    """attack.run(args) filled a notebook's namespace with what it took from the run (its label
    folder, --examples, the checkpoint resolved): reused for another checkpoint, the first run's
    folders went with it."""
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    monkeypatch.chdir(tmp_path)
    args = attack.build_parser().parse_args(["--checkpoint", "speech_seed3_resnet32_best_model.pth", "--data_dir",
                                             str(cifar10_dir), "--attacks", "fgsm", "--epsilons", "8/255",
                                             "--targeted", "no", "--num_images", "5"])
    given = dict(vars(args))
    summary = attack.run(args)
    assert summary["run_dir"] == str(tmp_path.resolve()) and summary["num_images"] == 5
    assert vars(args) == given and args.label_dir is None and args.examples is None


def test_an_attack_or_eps_given_twice_is_run_once(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    summary, err = call_main(capsys, ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"),
                                      "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
                                      "--attacks", "fgsm", "fgsm", "--targeted", "no", "--epsilons", "8/255",
                                      "0.03137254901960784", "8/255", "--num_images", "5", "--examples", "0"])
    assert list(summary["robust_acc"]) == ["fgsm/untargeted/8/255"]
    assert err.count("fgsm untargeted eps 8/255") == 1, err  # not also "reused" from its own first run
    # the repeats went without a word: a slip (8/255 twice for 8/255 16/255) as often as meant
    assert err.startswith("warning: --attacks lists fgsm more than once; each setting is attacked once\n"
                          "warning: --epsilons lists 8/255 (also as 0.03137254901960784) more than once; each "
                          "setting is attacked once\n"), err
    saved = json.loads((tmp_path / "attack_results.json").read_text())
    assert saved["config"]["attacks"] == ["fgsm"] and len(saved["entries"]) == 1
    # reused, the setting goes by the eps as now written: a notebook looks up the key it asked for
    again, err = call_main(capsys, ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"),
                                    "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
                                    "--attacks", "fgsm", "--targeted", "no", "--epsilons", "0.03137254901960784",
                                    "--num_images", "5", "--examples", "0", "--steps", "4", "--restarts", "3"])
    assert again["robust_acc"] == {"fgsm/untargeted/0.03137254901960784": summary["robust_acc"][
        "fgsm/untargeted/8/255"]} and "(reused from" in err
    # FGSM takes one step and no restart: the flags went without a word, as train.py warns of a label's
    assert err.startswith("warning: --steps only acts with --attacks iterative or pgd; ignored for --attacks "
                          "fgsm\nwarning: --restarts only acts with --attacks pgd; ignored for --attacks fgsm\n")


def test_main_leaves_the_callers_random_state(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    # a notebook's torch.manual_seed holds across attack.main: rebuilding the model draws no weights
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    call_main(capsys, ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"),
                       "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir), "--attacks", "pgd",
                       "--epsilons", "8/255", "--steps", "1", "--num_images", "5", "--examples", "2"])
    assert torch.equal(torch.get_rng_state(), state)


def test_a_targeted_examples_figure_names_each_images_target(speech_run, cifar10_dir, label_dir, tmp_path,
                                                              capsys, monkeypatch):
    """The figure of a targeted attack titled each adversarial image with its prediction alone: whether
    the attack reached its target could not be read off it."""
    from matplotlib.figure import Figure
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    call_main(capsys, ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"),
                       "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir), "--attacks", "fgsm",
                       "--epsilons", "8/255", "--targeted", "yes", "--num_images", "5", "--examples", "2"])
    [figure] = drawn
    read = [ax.get_title().replace("\n", "") for ax in figure.axes]  # as one line, however wrapped
    titles = [t for t in read if t.startswith("-> ")]
    data = load_cifar("cifar10", cifar10_dir)
    names, goals = data.class_names, draw_targets(torch.as_tensor(data.test_labels), 10, 3)
    shown = [int(t.split("#", 1)[1].split(" ", 1)[0]) for t in read if t.startswith("#")]
    assert len(titles) == len(shown) == 2
    assert [t.rsplit(" (target ", 1)[1] for t in titles] == [f"{names[goals[i]]})" for i in shown]


def test_the_examples_figure_keeps_cifar100s_long_class_names_apart(tmp_path, capsys, monkeypatch):
    """CIFAR-100's superclass names ("large_man-made_outdoor_things") titled each image in one line
    wider than the image: a targeted attack's titles ran into their neighbours', and the names could
    not be read. They are wrapped over their own image, and read as the coarse names once unwrapped."""
    import pickle

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import train
    from conftest import make_cifar100
    from labels.generate import CIFAR100_CLASSES, CIFAR100_COARSE_CLASSES
    data_dir = make_cifar100(tmp_path / "data")
    with open(data_dir / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(CIFAR100_CLASSES),
                     "coarse_label_names": list(CIFAR100_COARSE_CLASSES)}, f)
    run = ["--dataset", "cifar100", "--label_granularity", "coarse", "--data_dir", str(data_dir),
           "--base_dir", str(tmp_path / "runs"), "--device", "cpu"]
    train.main(run + ["--valid_size", "50", "--epochs", "1"])
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    call_main(capsys, run + ["--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "yes",
                             "--num_images", "5", "--examples", "3"])
    [figure] = drawn
    FigureCanvasAgg(figure).draw()  # lays the figure out as savefig does
    renderer = figure.canvas.get_renderer()
    labels = load_cifar("cifar100", data_dir, "coarse").test_labels
    for start in ("#", "-> "):
        row = sorted((ax for ax in figure.axes if ax.get_title().startswith(start)),
                     key=lambda ax: ax.get_position().x0)
        assert len(row) == 3
        extents = [ax.title.get_window_extent(renderer) for ax in row]
        assert all(left.x1 < right.x0 for left, right in zip(extents, extents[1:])), \
            [ax.get_title() for ax in row]
        assert extents[0].x0 >= 0 and extents[-1].x1 <= figure.bbox.width
    titles = [ax.get_title().replace("\n", "") for ax in figure.axes if ax.get_title().startswith("#")]
    shown = [int(t[1:].split(" ", 1)[0]) for t in titles]
    assert titles == [f"#{i} {CIFAR100_COARSE_CLASSES[labels[i]]}" for i in shown]


def test_the_examples_figure_shows_as_many_images_as_asked_under_the_strongest_untargeted_setting(
        speech_run, cifar10_dir, label_dir, tmp_path, capsys, monkeypatch):
    """attack_examples.png: --examples N correctly classified test images (not the default 6), under
    the first attack's largest eps, untargeted before targeted, as attack.py's help says."""
    from matplotlib.figure import Figure
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    summary, _ = call_main(capsys, ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"),
                                    "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
                                    "--attacks", "fgsm", "--epsilons", "0", "8/255", "--targeted", "both",
                                    "--num_images", "64", "--examples", "1"])
    # more correctly classified images than asked, so the figure has to pick one of them
    assert round(summary["clean_acc"] * 64) > 1, summary["clean_acc"]
    [figure] = drawn
    assert len([ax for ax in figure.axes if ax.get_title().startswith("#")]) == 1
    assert "resnet32 speech: fgsm untargeted, eps 8/255" in figure.get_suptitle()


def test_attack_script_end_to_end_and_reuse(speech_run, cifar10_dir, label_dir, capsys):
    base, run_dir = speech_run
    flags = script_flags(cifar10_dir, base, label_dir, "--attacks", "fgsm", "pgd", "--epsilons", "0",
                         "8/255", "--steps", "2", "--num_images", "30", "--batch_size", "16")
    proc = run_script("attack.py", *flags, env=ONE_THREAD)
    summary = last_json(proc)
    assert summary["run_dir"] == str(run_dir) and summary["num_images"] == 30
    keys = [f"{a}/{m}/{e}" for a in ("fgsm", "pgd") for m in ("untargeted", "targeted") for e in ("0", "8/255")]
    assert list(summary["robust_acc"]) == keys
    assert list(summary["target_success"]) == [k for k in keys if "/targeted/" in k]
    assert all(v == summary["clean_acc"] for k, v in summary["robust_acc"].items() if k.endswith("/0"))
    assert proc.stderr.count("robust_acc") == len(keys)  # one progress line per setting
    # first, at once, what is attacked (a cluster log said nothing until the first setting ended)
    assert unstamped(proc.stderr.splitlines()[0]) == (f"attacking {run_dir / 'speech_seed3_resnet32_best_model.pth'}: "
                                                      "8 settings on 30 test images, batch 16, on cpu")
    # in a log, each line says how far along the attack is, as the bar's count does on a terminal
    # and when it was written (a stalled job's log shows when its last setting ended)
    lines = [line for line in proc.stderr.splitlines() if "robust_acc" in line]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \[", line) for line in lines), lines
    lines = [line.split(" ", 1)[1] for line in lines]
    assert [line.split(" ", 1)[0] for line in lines] == [f"[{i}/{len(keys)}]" for i in range(1, len(keys) + 1)]
    assert lines[0].startswith("[1/8] fgsm untargeted eps 0: robust_acc ")
    assert lines[-1].startswith("[8/8] pgd targeted eps 8/255: robust_acc ")
    saved = json.loads((run_dir / ATTACK_RESULTS).read_text())
    assert saved["label"] == "speech" and saved["model"] == "resnet32" and saved["num_images"] == 30
    assert saved["config"]["steps"] == 2 and saved["environment"]["torch"]
    entry = next(e for e in saved["entries"] if e["attack"] == "pgd" and e["targeted"] and e["eps"] > 0)
    assert entry["eps_label"] == "8/255" and entry["eps"] == pytest.approx(8 / 255)
    assert (entry["protocol"], entry["steps"], entry["restarts"]) == ("pixel", 2, 1)
    assert entry["step_size"] == pytest.approx(2.5 * 8 / 255 / 2)
    for key in ("robust_acc", "target_success", "images_per_s", "seconds", "clean_acc"):
        assert key in entry
    # what its images/s were measured on (the file's config is its last run's, its entries any run's)
    assert (entry["device"], entry["batch_size"], entry["channels_last"]) == ("cpu", 16, False)
    assert (run_dir / ATTACK_EXAMPLES).read_bytes()[:4] == b"\x89PNG"

    # Same settings: every entry is reused, and nothing is written (a read-only archive of
    # finished runs can be reread); one more eps: only the new settings are computed.
    written = {name: (run_dir / name).read_bytes() for name in (ATTACK_RESULTS, ATTACK_EXAMPLES)}
    again, err = call_main(capsys, flags)
    assert again == summary and err.count("(reused from") == len(keys)
    assert err.splitlines()[-1].split(" ", 1)[1].startswith("[8/8] pgd targeted eps 8/255: robust_acc ")
    assert "warning" not in err, err  # no --smoothing given: the default the flags fill in warned
    assert {name: (run_dir / name).read_bytes() for name in written} == written
    # --smoothing acts on category runs alone: for this speech run it went without a word, where train.py warns
    assert call_main(capsys, flags + ["--smoothing", "0.1"])[1].startswith(
        "warning: --smoothing only acts with --label category; ignored for --label speech\n")
    (run_dir / ATTACK_EXAMPLES).write_bytes(b"stale")  # say, drawn with other flags
    call_main(capsys, flags)
    assert (run_dir / ATTACK_EXAMPLES).read_bytes() == b"stale"
    _, err = call_main(capsys, flags + ["--examples", "2"])  # asked for: the figure, and only it, again
    assert err.count("(reused from") == len(keys)
    assert (run_dir / ATTACK_RESULTS).read_bytes() == written[ATTACK_RESULTS]
    assert (run_dir / ATTACK_EXAMPLES).read_bytes()[:4] == b"\x89PNG"
    more = flags[:flags.index("--epsilons") + 1] + ["0", "8/255", "2/255"] + flags[flags.index("--steps"):]
    grown, err = call_main(capsys, more)
    assert err.count("(reused from") == len(keys) and len(grown["robust_acc"]) == len(keys) + 4
    assert len(json.loads((run_dir / ATTACK_RESULTS).read_text())["entries"]) == len(keys) + 4

    # The paper's protocol adds its own entries beside the pixel-space ones (here channels-last).
    paper, _ = call_main(capsys, script_flags(cifar10_dir, base, label_dir, "--paper_protocol",
                                              "--epsilons", "0", "0.1", "--num_images", "30",
                                              "--channels_last"))
    assert list(paper["robust_acc"]) == [f"{a}/{m}/{e}" for a in ("fgsm", "iterative")
                                         for m in ("untargeted", "targeted") for e in ("0", "0.1")]
    saved = json.loads((run_dir / ATTACK_RESULTS).read_text())
    entries = saved["entries"]
    assert {e["protocol"] for e in entries} == {"pixel", "paper"} and saved["config"]["channels_last"]
    # each entry says the memory format its images/s were measured in, the config only the last run's
    assert {(e["protocol"], e["channels_last"]) for e in entries} == {("pixel", False), ("paper", True)}
    assert {e["steps"] for e in entries if e["protocol"] == "paper" and e["attack"] == "iterative"} == {5}

    # The margin objective adds its own entries too; the loss ones (written before the key
    # existed, or with objective "loss") are still reused.
    margin, err = call_main(capsys, script_flags(cifar10_dir, base, label_dir, "--attacks", "pgd", "--epsilons", "0",
                                                 "8/255", "--steps", "2", "--num_images", "30", "--batch_size",
                                                 "16", "--objective", "margin"))
    assert list(margin["robust_acc"]) == [f"pgd+margin/{m}/{e}" for m in ("untargeted", "targeted")
                                          for e in ("0", "8/255")]
    assert "(reused from" not in err and err.count("pgd+margin") == 4
    entries = json.loads((run_dir / ATTACK_RESULTS).read_text())["entries"]
    assert sum(e.get("objective") == "margin" for e in entries) == 4
    assert margin["robust_acc"]["pgd+margin/untargeted/0"] == summary["clean_acc"]
    _, err = call_main(capsys, flags)
    assert err.count("(reused from") == len(keys)


def test_a_setting_on_other_test_images_is_computed_again(speech_run, cifar10_dir, label_dir, tmp_path,
                                                           capsys):
    """The same checkpoint attacked on another copy of the dataset (as many test images, other
    pixels: the real CIFAR-10 after a trial one) computes the setting again, beside the first
    images' entry, rather than passing that entry off as the new images' result."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    other = make_cifar10(tmp_path / "other", seed=1)
    flags = ["--checkpoint", str(checkpoint), "--label_dir", str(label_dir), "--attacks", "fgsm",
             "--epsilons", "8/255", "--targeted", "no", "--num_images", "5", "--examples", "0",
             "--device", "cpu"]
    call_main(capsys, flags + ["--data_dir", str(cifar10_dir)])
    _, err = call_main(capsys, flags + ["--data_dir", str(other)])
    assert "(reused from" not in err
    entries = json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]
    assert len(entries) == 2 and len({e["images_sha256"] for e in entries}) == 2
    # what sweep.py reads of each --data_dir, without torch, to know which entries are done there
    from utils.grid import test_images_sha256
    assert [e["images_sha256"] for e in entries] == [test_images_sha256("cifar10", d, "fine", 5)
                                                     for d in (cifar10_dir, other)]
    _, err = call_main(capsys, flags + ["--data_dir", str(cifar10_dir)])  # the first images' again: reused
    assert "(reused from" in err


def test_an_attack_reads_the_test_batches_alone(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """attack.py read the training batches too and held them through every attack, none of whose
    images it attacks: on a full CIFAR-100, 150 MB held and its load's peak 366 MB over torch's
    (now 76 MB); a --data_dir holding the test batch alone was 'cifar10 not found (it lacks
    data_batch_1, ...)'. It attacks the same images as with the whole dataset."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("test_batch", "batches.meta"):
        shutil.copy(cifar10_dir / "cifar-10-batches-py" / name, folder)
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    call_main(capsys, one_fgsm(checkpoint, tmp_path / "data", label_dir))
    from utils.grid import test_images_sha256
    entry, = json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]
    assert entry["images_sha256"] == test_images_sha256("cifar10", cifar10_dir, "fine", 5)
    args = attack.build_parser().parse_args(one_fgsm(checkpoint, tmp_path / "data", label_dir))
    data = attack.load_run(args, attack.find_checkpoint(args)[0])[2]
    assert data.train_images is None and len(data.test_labels) == 100


def test_a_data_dir_without_the_test_batch_names_the_files_an_attack_reads(speech_run, label_dir, tmp_path,
                                                                          capsys):
    """attack.py, which reads the test batch alone, said of a --data_dir without it: put the files
    (data_batch_1, ..., data_batch_5, test_batch, batches.meta) there, five of which it never reads
    (a user copying the test batch to a node copied 150 MB more). It names what it reads."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    assert one_line_error(capsys, one_fgsm(checkpoint, tmp_path / "data", label_dir)) == (
        f"error: cifar10 not found in {folder} (LABELREP_OFFLINE is set, so no download was tried); put the "
        "python-pickle files (test_batch, and batches.meta for the class names) there, or pass --data_dir to "
        "where they are")


def test_a_setting_is_reused_only_where_its_computation_is_the_same(speech_run, cifar10_dir, label_dir,
                                                                   tmp_path, capsys):
    """An entry of attack_results.json answers a rerun only where the rerun would compute the same:
    another --restarts, --amp, --steps at the same --step_size, --step_size at the same --steps, or
    the same numbers under --paper_protocol (normalised units) is computed again, beside it."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    flags = ["--checkpoint", str(checkpoint), "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
             "--attacks", "pgd", "--epsilons", "8/255", "--targeted", "no", "--steps", "1", "--step_size",
             "2/255", "--num_images", "5", "--examples", "0", "--device", "cpu"]
    call_main(capsys, flags)
    for change in (["--restarts", "2"], ["--amp"], ["--steps", "2"], ["--step_size", "1/255"],
                   ["--paper_protocol"]):
        _, err = call_main(capsys, flags + change)
        assert "(reused from" not in err, change
    entries = json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]
    assert [(e["protocol"], e["steps"], round(e["step_size"] * 255, 6), e["restarts"], e["amp"])
            for e in entries] == [("pixel", 1, 2, 1, False), ("pixel", 1, 2, 2, False),
                                  ("pixel", 1, 2, 1, True), ("pixel", 2, 2, 1, False),
                                  ("pixel", 1, 1, 1, False), ("paper", 1, 2, 1, False)]
    _, err = call_main(capsys, flags + ["--amp"])
    assert "(reused from" in err


def test_a_setting_computed_in_another_dtype_is_computed_again(speech_run, cifar10_dir, label_dir, tmp_path,
                                                               capsys):
    """The attack computes in the model's dtype, torch's default where attack.run rebuilt it (a
    notebook's torch.set_default_dtype(torch.float64)): a float32 rerun reused the float64 entry,
    whose numbers and speed are another computation's, as its own."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    flags = one_fgsm(checkpoint, cifar10_dir, label_dir, targeted="no")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        call_main(capsys, flags)
    finally:
        torch.set_default_dtype(default)
    _, err = call_main(capsys, flags)
    assert "(reused from" not in err
    entries = json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]
    assert [e["dtype"] for e in entries] == ["float64", "float32"]
    _, err = call_main(capsys, flags)
    assert "(reused from" in err


def test_each_entry_records_the_code_that_computed_it(speech_run, cifar10_dir, label_dir, tmp_path,
                                                      capsys, monkeypatch):
    """attack_results.json's environment is the last attack.py call's: the entries an earlier call
    computed (another commit, another torch) lost where they came from once a later call added
    its own. Each entry keeps its own commit and torch; a reused one keeps the one it had."""
    from utils import runs
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    flags = one_fgsm(checkpoint, cifar10_dir, label_dir)
    first, second = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    monkeypatch.setattr(runs, "code_version", lambda: first)
    call_main(capsys, flags)
    monkeypatch.setattr(runs, "code_version", lambda: second)
    _, err = call_main(capsys, flags[:flags.index("--epsilons") + 1] + ["8/255", "2/255"] +
                       flags[flags.index("--targeted"):])
    assert err.count("(reused from") == 1
    saved = json.loads((tmp_path / ATTACK_RESULTS).read_text())
    assert [(e["eps_label"], e["computed_by"]) for e in saved["entries"]] == [
        ("8/255", {"labelrep": runs.__version__, "git": first, "torch": torch.__version__}),
        ("2/255", {"labelrep": runs.__version__, "git": second, "torch": torch.__version__})]
    assert saved["environment"]["git"] == second


def test_a_targeted_pgd_of_restarts_an_older_attack_py_wrote_is_computed_again(speech_run, cifar10_dir, label_dir,
                                                                             tmp_path, capsys):
    """Before f72d56a, targeted PGD with --restarts counted an image an earlier restart misclassified
    as robust where a later restart left it correct (a 6-epoch category run: 9% robust accuracy
    where it is 5% at 64/255). attack.py after a `git pull` reused such an entry of the older code:
    '(reused from attack_results.json)'. Entries without the device they ran on (written before
    1ca2340) are computed again; an untargeted one of the same age is reused."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    flags = ["--checkpoint", str(checkpoint), "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
             "--attacks", "pgd", "--restarts", "2", "--steps", "2", "--epsilons", "8/255", "--targeted", "both",
             "--num_images", "5", "--examples", "0", "--device", "cpu"]
    computed, _ = call_main(capsys, flags)
    path = tmp_path / ATTACK_RESULTS
    results = json.loads(path.read_text())
    for e in results["entries"]:  # as an attack.py before 1ca2340 wrote them, the older code's numbers
        del e["device"], e["batch_size"], e["dtype"], e["class_images"], e["class_robust"]
        e["robust_acc"] = 0.6 if e["targeted"] else e["robust_acc"]
    path.write_text(json.dumps(results))
    summary, err = call_main(capsys, flags)
    assert (f"{path}: dropping 1 targeted PGD entry of several restarts written by an attack.py that may "
            "predate f72d56a's fix of how restarts count (computed again if asked for)") in err
    assert "pgd untargeted eps 8/255: robust_acc" in err and "(reused from" in err
    assert "pgd targeted eps 8/255: robust_acc" in err and err.count("(reused from") == 1
    assert summary["robust_acc"] == computed["robust_acc"]
    assert [("device" in e, e["targeted"]) for e in json.loads(path.read_text())["entries"]] == [
        (False, False), (True, True)]


def test_a_second_job_is_refused_before_it_loads_the_run(speech_run, label_dir, tmp_path, capsys):
    """An attack started on a run directory another job holds loaded the checkpoint and the test
    set first, then was refused: with a --data_dir it cannot read it said 'cifar10 not found', not
    that the run was in use. It is refused before it loads anything."""
    import fcntl
    base, run_dir = speech_run
    flags = script_flags(tmp_path / "no_data", base, label_dir, "--attacks", "fgsm", "--epsilons", "8/255",
                         "--num_images", "10", "--examples", "0")
    with open(run_dir / ".lock", "a") as other_job:   # as another process's run_lock holds it
        fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status, line = run_cli_status(capsys, flags)
    assert (status, line) == (2, f"error: {run_dir} is in use by another train.py or attack.py job; wait for it "
                                 "to end, or use another --base_dir")


def test_a_second_job_on_a_run_directory_is_one_line(speech_run, cifar10_dir, label_dir, capsys):
    """While train.py or attack.py works in a run directory, another attack there is refused
    (two jobs would each rewrite the results file from what it read, losing the other's)."""
    from utils.runs import run_lock
    base, run_dir = speech_run
    flags = script_flags(cifar10_dir, base, label_dir, "--attacks", "fgsm", "--epsilons", "8/255",
                         "--num_images", "10", "--examples", "0")
    before = (run_dir / ATTACK_RESULTS).read_bytes() if (run_dir / ATTACK_RESULTS).exists() else None
    with run_lock(run_dir):
        status, line = run_cli_status(capsys, flags)
        assert status == 2 and re.fullmatch(rf"error: {re.escape(str(run_dir))} is in use by \S+ \(pid {os.getpid()} "
                                            r"on [^;]+\); wait for it to end, or use another --base_dir", line), line
        checkpoint = next(run_dir.glob("*_best_model.pth"))
        assert run_cli_status(capsys, flags + ["--checkpoint", str(checkpoint)])[1].endswith(
            "wait for it to end, or attack a copy of the checkpoint in a folder of its own")
    after = (run_dir / ATTACK_RESULTS).read_bytes() if (run_dir / ATTACK_RESULTS).exists() else None
    assert after == before


def test_a_figure_that_could_not_be_written_is_drawn_by_the_next_run(speech_run, cifar10_dir, label_dir,
                                                                     tmp_path, capsys, monkeypatch):
    """New settings written, their figure not (a full disk): the earlier figure, of other settings
    or another checkpoint, stayed beside the new results, and no later run drew it again."""
    from utils import runs
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    flags = ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"), "--data_dir",
             str(cifar10_dir), "--label_dir", str(label_dir), "--attacks", "fgsm", "--targeted", "no",
             "--num_images", "10", "--epsilons", "0", "2/255"]
    png = tmp_path / ATTACK_EXAMPLES
    call_main(capsys, flags)
    earlier = png.read_bytes()

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(runs, "atomic_write", full_disk)
    status, err = run_cli_status(capsys, flags + ["8/255"])
    assert (status, err.splitlines()[-1]) == (2, f"error: could not write {png}: No space left on device")
    assert len(json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]) == 3 and not png.exists()
    monkeypatch.undo()
    _, err = call_main(capsys, flags + ["8/255"])
    assert err.count("(reused from") == 3 and png.read_bytes()[:4] == b"\x89PNG" and png.read_bytes() != earlier


def test_a_folder_that_cannot_hold_results_fails_before_the_first_setting(speech_run, cifar10_dir, label_dir,
                                                                          tmp_path, capsys, monkeypatch):
    """A read-only run folder (an archive) said "could not write" only after the first new setting's
    attack had run, minutes of PGD on a whole test split; and where every setting was there but the
    figure was not (its attack.py stopped before drawing it), or --examples asked it again, after the
    figure's attack and drawing. Now one line naming the folder and what to do, before any attack; a
    rerun that reuses every setting and draws nothing goes on."""
    from conftest import read_only
    from utils import attacks
    _, run_dir = speech_run
    shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", tmp_path)
    flags = ["--checkpoint", str(tmp_path / "speech_seed3_resnet32_best_model.pth"), "--data_dir",
             str(cifar10_dir), "--label_dir", str(label_dir), "--attacks", "fgsm", "--targeted", "no",
             "--num_images", "5", "--epsilons", "0", "2/255"]
    call_main(capsys, flags)
    (tmp_path / ATTACK_EXAMPLES).unlink()
    before = (tmp_path / ATTACK_RESULTS).read_bytes()
    real_attack, attacked = attacks.run_attack, []
    read_only(monkeypatch, tmp_path)
    monkeypatch.setattr(attacks, "run_attack", lambda *a, **k: attacked.append(a) or real_attack(*a, **k))
    _, err = call_main(capsys, flags + ["--examples", "0"])  # every setting reused: nothing to write
    assert err.count("(reused from") == 2
    copy = "attack a copy of the checkpoint in a folder of its own"
    status, err = run_cli_status(capsys, flags + ["8/255"])
    assert (status, err.splitlines()) == (2, [f"error: could not write {tmp_path}: Read-only file system; "
                                              f"nothing attacked: {copy}"])
    figure_only = (f"error: could not write {tmp_path}: Read-only file system; nothing attacked: its "
                   f"{ATTACK_RESULTS} holds every setting asked: pass --examples 0 to read them without drawing "
                   f"{ATTACK_EXAMPLES}, or {copy}")
    assert run_cli_status(capsys, flags) == (2, figure_only)
    (tmp_path / ATTACK_EXAMPLES).write_bytes(b"png")  # there: asked again with --examples
    assert run_cli_status(capsys, flags + ["--examples", "6"]) == (2, figure_only)
    assert not attacked and (tmp_path / ATTACK_RESULTS).read_bytes() == before


@pytest.mark.parametrize("when", ["first", "before the figure"])
def test_a_run_directory_removed_during_the_attack_is_one_line(when, speech_run, cifar10_dir, label_dir,
                                                               tmp_path, capsys, monkeypatch):
    """Removed as the attack began, it was made anew holding attack_results.json alone; removed after
    the last setting's results, anew holding attack_examples.png alone; the attack exited 0."""
    from utils import attacks
    _, run_dir = speech_run
    folder = tmp_path / "copy"
    real = attacks.run_attack

    def removed(*args, **kwargs):
        if when == "first" or kwargs.get("keep_images"):  # the figure's attack, after every setting's
            shutil.rmtree(folder, ignore_errors=True)
        return real(*args, **kwargs)
    monkeypatch.setattr(attacks, "run_attack", removed)
    argv = ["--checkpoint", str(folder / "speech_seed3_resnet32_best_model.pth"), "--data_dir",
            str(cifar10_dir), "--label_dir", str(label_dir), "--attacks", "fgsm", "--targeted", "no",
            "--epsilons", "8/255", "--num_images", "5", "--examples", "1"]
    for in_process in (False, True):  # in a notebook, the same words as the README's UsageError
        folder.mkdir()
        shutil.copy(run_dir / "speech_seed3_resnet32_best_model.pth", folder)
        if in_process:
            with pytest.raises(UsageError) as raised:
                attack.main(argv)
            assert str(raised.value) == f"cannot use {folder}: removed while this job worked in it"
        else:
            status, err = run_cli_status(capsys, argv)
            assert (status, err.splitlines()[-1]) == (2, f"error: cannot use {folder}: removed while "
                                                         "this job worked in it")
        assert not folder.exists()


def run_cli_status(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        run_cli(attack.main, argv)
    return stopped.value.code, capsys.readouterr().err.strip()


def copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, epsilons, examples):
    """attack.py's flags for FGSM at `epsilons` on 20 images of a copy of `speech_run`'s best
    checkpoint in `tmp_path` (its attack_results.json goes there), drawing `examples`."""
    checkpoint = tmp_path / "speech.pth"
    checkpoint.write_bytes((speech_run[1] / "speech_seed3_resnet32_best_model.pth").read_bytes())
    return ["--checkpoint", str(checkpoint), "--seed", "3", "--data_dir", str(cifar10_dir),
            "--label_dir", str(label_dir), "--attacks", "fgsm", "--epsilons", *epsilons,
            "--targeted", "no", "--num_images", "20", "--examples", str(examples)]


def test_preempted_run_keeps_finished_settings(speech_run, cifar10_dir, label_dir, tmp_path,
                                               capsys, monkeypatch):
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, ["0", "4/255", "8/255"], 0)
    results = tmp_path / ATTACK_RESULTS
    monkeypatch.setattr(preempt, "install", lambda: None)
    monkeypatch.setattr(preempt, "requested", lambda: results.exists())  # a signal after setting 1
    with pytest.raises(SystemExit) as exit_info:
        attack.main(flags)
    assert exit_info.value.code == preempt.REQUEUE_EXIT
    assert "preempted" in capsys.readouterr().err
    assert len(json.loads(results.read_text())["entries"]) == 1
    monkeypatch.setattr(preempt, "requested", lambda: False)
    summary, err = call_main(capsys, flags)
    assert err.count("(reused from") == 1 and len(summary["robust_acc"]) == 3
    assert summary["run_dir"] == str(tmp_path)


def test_out_of_memory_is_one_line_and_keeps_finished_settings(speech_run, cifar10_dir, label_dir, tmp_path,
                                                                capsys):
    """The model's convolutions in the second setting ask for more memory than any machine has
    (torch refuses it before any memory is touched): attack.py ended in a RuntimeError traceback
    ('DefaultCPUAllocator: can't allocate memory ...') with exit status 1. One line now, with the
    size asked and what to lower, exit status 2; the first setting is kept, and the rerun reuses it.
    (The convolutions: the attacks run a copy of the model with its batch norms folded into them.)"""
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, ["4/255", "8/255"], 0)
    results = tmp_path / ATTACK_RESULTS
    code = textwrap.dedent("""
        import pathlib, runpy, sys, torch
        results, forward = pathlib.Path(sys.argv[1]), torch.nn.Conv2d.forward
        def short_of_memory(self, images):  # once the first setting is written
            if results.exists():
                torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB
            return forward(self, images)
        torch.nn.Conv2d.forward = short_of_memory
        sys.argv = ["attack.py", *sys.argv[2:]]
        runpy.run_path("attack.py", run_name="__main__")""")
    proc = subprocess.run([sys.executable, "-c", code, str(results), *flags, "--device", "cpu"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, timeout=600)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "error: out of this machine's memory: torch could not allocate 1.00 PiB; lower --batch_size; a rerun "
        "reuses the settings finished before")
    assert [e["eps"] for e in json.loads(results.read_text())["entries"]] == [4 / 255]
    summary, err = call_main(capsys, flags + ["--device", "cpu"])
    assert err.count("(reused from") == 1 and len(summary["robust_acc"]) == 2


def test_a_checkpoint_the_machine_has_no_memory_to_load_is_not_called_corrupt(speech_run, label_dir, cifar10_dir,
                                                                              tmp_path, capsys, monkeypatch):
    """torch.load running out of memory was 'checkpoint ... is corrupt or not a labelrep checkpoint
    (RuntimeError)', whose train.py form advises deleting it: the line for memory instead."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)

    def short_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 83886080 bytes. Error code 12 (Cannot allocate memory)")
    monkeypatch.setattr(torch, "load", short_of_memory)
    assert call_cli(attack.main, one_fgsm(checkpoint, cifar10_dir, label_dir), memory=attack.MEMORY) == 2
    assert capsys.readouterr().err == ("error: out of this machine's memory: torch could not allocate 80.00 MiB; "
                                       "lower --batch_size; a rerun reuses the settings finished before\n")


def test_a_stop_counts_every_saved_setting_asked(speech_run, cifar10_dir, label_dir, tmp_path, capsys, monkeypatch):
    """A rerun stopped by a signal right after its first setting, reused, said '1 finished setting
    is kept' of a file holding all 3 it asked for (a requeued job of 156 settings stopped while
    reusing: '1 of 80'), and 'no setting had finished' where the first to compute stopped though
    an earlier run had saved a later one: the count is of the settings asked that the file holds,
    which the rerun reuses."""
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, ["0", "4/255", "8/255"], 0)
    call_main(capsys, flags)
    monkeypatch.setattr(preempt, "install", lambda: None)
    monkeypatch.setattr(preempt, "requested", lambda: True)  # a signal during the first (reused) setting
    status, err = run_cli_status(capsys, flags)
    assert (status, unstamped(err.splitlines()[-1])) == (
        preempt.REQUEUE_EXIT, f"preempted: {tmp_path}: stopped by signal; 3 finished settings are kept in "
                              f"{tmp_path / ATTACK_RESULTS}, rerun to continue")
    # 2/255 first, to compute: the signal stops it at once (its time not known), 4/255 is saved
    status, err = run_cli_status(capsys, flags[:flags.index("0")] + ["2/255", "4/255"] + flags[flags.index("8/255") + 1:])
    assert status == preempt.REQUEUE_EXIT
    assert "stopped by signal during fgsm untargeted eps 2/255; 1 finished setting is kept" in err.splitlines()[-1]

@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="Windows has no SIGHUP")
def test_a_hangup_stops_an_attack_as_sigterm_does(speech_run, cifar10_dir, label_dir, tmp_path):
    """attack.py started over ssh without nohup or tmux (`2> attack.log`) died at once of the
    SIGHUP that came when the connection dropped, the setting under way lost. It now stops as for
    SIGTERM: the settings it finished are kept, exit 75, and the log ends with the preempted line."""
    import pty
    import subprocess
    import sys
    import time
    epsilons = [f"{k}/255" for k in range(1, 9)]
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, epsilons, 0)
    leader, follower = pty.openpty()
    log, results = tmp_path / "attack.log", tmp_path / ATTACK_RESULTS
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "attack.py", *flags], cwd=Path(attack.__file__).parent,
                                stdin=follower, stdout=follower, stderr=log_file, start_new_session=True,
                                env={**os.environ, **ONE_THREAD})
    os.close(follower)
    deadline = time.time() + 300
    while not results.exists() and proc.poll() is None and time.time() < deadline:  # a setting is saved
        time.sleep(0.02)
    os.close(leader)  # the connection drops: the terminal hangs up
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=300) == preempt.REQUEUE_EXIT, log.read_text()
    kept = len(json.loads(results.read_text())["entries"])
    assert 1 <= kept < len(epsilons)
    line = unstamped(log.read_text().splitlines()[-1])
    assert line.startswith(f"preempted: {tmp_path}: stopped by signal; {kept} finished setting")
    assert line.endswith(f"kept in {results}, rerun to continue"), line


@pytest.mark.parametrize("finish_seconds, signalled, kept", [
    (3600, 3, 3),  # FGSM 8/255 after FGSM 4/255, short: it ends and is saved
    (0, 3, 2),  # after one that took longer than FINISH_SECONDS: stopped at once
    (3600, 2, 1),  # the first FGSM to attack (eps 0 attacks nothing): its time is not known
    (3600, 4, 3),  # the first PGD, after FGSM's one step: not known either
])
def test_a_stop_signal_lets_a_short_setting_end(finish_seconds, signalled, kept, speech_run, cifar10_dir,
                                                label_dir, tmp_path, capsys, monkeypatch):
    """A SIGTERM during a setting stopped its attack at once, losing its work, even where it took
    a second (FGSM on 1000 images) and would have ended long before SLURM's kill; train.py lets
    such an epoch end. A setting now ends, is saved and the job exits 75 where the last this job
    computed of the same attack and mode took preempt.FINISH_SECONDS at most; else, or with none,
    the signal stops it at once."""
    import signal
    monkeypatch.setattr(preempt, "FINISH_SECONDS", finish_seconds)
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, ["0", "4/255", "8/255"], 0)
    flags.insert(flags.index("fgsm") + 1, "pgd")  # settings: FGSM at each eps, then PGD
    real_run_setting, settings = attack.run_setting, []

    def signalled_in_one(*args, **kwargs):
        settings.append(args[5]["eps"])
        if len(settings) == signalled:
            signal.raise_signal(signal.SIGTERM)  # caught by the job's handler: its attack goes on or stops
        return real_run_setting(*args, **kwargs)
    monkeypatch.setattr(attack, "run_setting", signalled_in_one)
    with pytest.raises(SystemExit) as exit_info:
        attack.main(flags)
    assert exit_info.value.code == preempt.REQUEUE_EXIT
    assert f"{kept} finished setting" in capsys.readouterr().err.splitlines()[-1]
    assert len(settings) == signalled
    assert len(json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]) == kept


def test_a_stop_signal_after_the_last_settings_attack_lets_the_job_finish(speech_run, cifar10_dir, label_dir,
                                                                          tmp_path, capsys, monkeypatch):
    """A SIGTERM that came after the last setting's attack (every entry saved, the figure alone
    left to draw) ended the job with 75, "rerun to continue", for a requeue that drew the figure;
    train.py finishes after its last epoch's steps. The job ends as usual now (exit 0, figure
    drawn), and the signal reaches a caller's own handler (a kernel's) once the files are written."""
    import signal
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, ["0", "8/255"], 2)
    real_run_setting, settings = attack.run_setting, []

    def signalled_after_the_last(*args, **kwargs):
        result = real_run_setting(*args, **kwargs)
        settings.append(args[5]["eps"])
        if len(settings) == 2:  # the second and last setting's attack is done, its entry not yet written
            signal.raise_signal(signal.SIGTERM)
        return result
    monkeypatch.setattr(attack, "run_setting", signalled_after_the_last)
    reached = []  # the caller's handler: whether the job's files were there when it ran
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: reached.append(
        [(tmp_path / name).exists() for name in (ATTACK_RESULTS, ATTACK_EXAMPLES)]))
    try:
        summary, err = call_main(capsys, flags)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "preempted" not in err and summary["examples"] == str(tmp_path / ATTACK_EXAMPLES)
    assert len(json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]) == 2
    assert (tmp_path / ATTACK_EXAMPLES).read_bytes()[:4] == b"\x89PNG"
    assert reached == [[True, True]]


def test_ctrl_c_in_the_attack_loop_says_what_is_kept(speech_run, cifar10_dir, label_dir, tmp_path, capsys,
                                                    monkeypatch):
    """It said 'finished settings are kept in the run's attack_results.json' wherever Ctrl-C came,
    even while the checkpoint loaded and none had run: not which file, nor how many."""
    flags = copied_checkpoint_flags(speech_run, tmp_path, cifar10_dir, label_dir, ["0", "8/255"], 0)
    results = tmp_path / ATTACK_RESULTS
    real_run_setting = attack.run_setting

    def interrupted_first(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(attack, "run_setting", interrupted_first)  # it named a file not yet written
    status, err = run_cli_status(capsys, flags)
    assert (status, err.splitlines()[-1]) == (130, f"error: interrupted; {tmp_path}: stopped; no setting "
                                                   "had finished, rerun to continue")
    assert not results.exists()

    def interrupted_second(*args, **kwargs):
        if results.exists():
            raise KeyboardInterrupt
        return real_run_setting(*args, **kwargs)
    monkeypatch.setattr(attack, "run_setting", interrupted_second)
    status, err = run_cli_status(capsys, flags)
    assert (status, err.splitlines()[-1]) == (130, f"error: interrupted; {tmp_path}: stopped; 1 finished "
                                                   f"setting is kept in {results}, rerun to continue")
    assert len(json.loads(results.read_text())["entries"]) == 1

    # while the figure is drawn, after the last setting: it said only "interrupted"
    monkeypatch.setattr(attack, "run_setting", real_run_setting)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(attack, "save_examples", interrupted)
    status, err = run_cli_status(capsys, flags[:-2] + ["--examples", "2"])
    assert (status, err.splitlines()[-1]) == (130, f"error: interrupted; {tmp_path}: stopped while drawing "
                                                   f"{ATTACK_EXAMPLES}; 2 finished settings are kept in "
                                                   f"{results}, rerun to continue")
    assert len(json.loads(results.read_text())["entries"]) == 2 and not (tmp_path / ATTACK_EXAMPLES).exists()


def test_results_of_another_checkpoint_are_never_dropped(speech_run, cifar10_dir, label_dir,
                                                         tmp_path, capsys):
    """Two checkpoints in one folder share its attack_results.json: attacking the second must not
    throw away the first one's results while that checkpoint still exists."""
    _, run_dir = speech_run
    first, second = tmp_path / "first.pth", tmp_path / "second.pth"
    state = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    torch.save(state, first)
    state["epoch"] = state.get("epoch", 0) + 1   # other bytes, the same weights
    torch.save(state, second)
    flags = ["--seed", "3", "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
             "--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no", "--num_images", "10",
             "--examples", "0"]
    results = tmp_path / ATTACK_RESULTS
    call_main(capsys, flags + ["--checkpoint", str(first)])
    before = results.read_bytes()
    line = one_line_error(capsys, flags + ["--checkpoint", str(second)])
    assert f"{results} holds the results of attacks on {first}, not on {second}" in line
    assert results.read_bytes() == before
    first.unlink()   # once that checkpoint is gone, its results may go, and its figure with them
    (tmp_path / ATTACK_EXAMPLES).write_bytes(b"the first checkpoint's figure")  # --examples 0 kept it
    summary, err = call_main(capsys, flags + ["--checkpoint", str(second)])
    assert f"dropping 1 entry computed on another checkpoint, and {ATTACK_EXAMPLES}" in err
    assert not (tmp_path / ATTACK_EXAMPLES).exists()
    assert json.loads(results.read_text())["checkpoint"] == str(second)
    # entries sweep.py and report.py would not count; a seed or amp that is a list was a TypeError
    for change in ({"robust_acc": None}, {"seed": [3]}, {"amp": {}}):
        saved = json.loads(results.read_text())
        saved["entries"][0] |= change
        results.write_text(json.dumps(saved))
        summary, err = call_main(capsys, flags + ["--checkpoint", str(second)])
        assert "dropping 1 malformed entry (" in err and "(reused from" not in err
        assert 0 <= summary["robust_acc"]["fgsm/untargeted/8/255"] <= 1
        assert len(json.loads(results.read_text())["entries"]) == 1
    for content, message in (("[]", "holds an array, not the JSON object labelrep writes"),
                             ('{"entries": 5}', "is not an attack.py results file")):
        results.write_text(content)
        line = one_line_error(capsys, flags + ["--checkpoint", str(second)])
        assert f"{results} {message}" in line


def test_an_entry_without_its_results_is_computed_again(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """A reused entry reports its clean accuracy and, targeted, its target success: one edited
    without them (sweep.py and report.py still read it) was a KeyError traceback once reused."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    flags = one_fgsm(checkpoint, cifar10_dir, label_dir, targeted="yes")
    first, _ = call_main(capsys, flags)
    results = tmp_path / ATTACK_RESULTS
    written = results.read_text()
    for key in ("clean_acc", "target_success"):
        edited = json.loads(written)
        del edited["entries"][0][key]
        results.write_text(json.dumps(edited))
        summary, err = call_main(capsys, flags)
        assert "(reused from" not in err and summary == first, key
        # the edited entry stays beside the new one; the new one answers the next rerun
        assert [key in e for e in json.loads(results.read_text())["entries"]] == [False, True]
        _, err = call_main(capsys, flags)
        assert "(reused from" in err
        results.write_text(written)


def test_a_checkpoint_is_attacked_with_its_runs_seed(speech_run, cifar10_dir, label_dir, tmp_path,
                                                     capsys, monkeypatch, tiny):
    """--checkpoint without --seed: the targets and random starts of the run's own seed, so the
    entries match (and reuse) those found through the run's flags; --seed draws others."""
    import utils.attacks
    _, run_dir = speech_run
    checkpoint = tmp_path / "speech.pth"
    checkpoint.write_bytes((run_dir / "speech_seed3_resnet32_best_model.pth").read_bytes())
    real, calls = utils.attacks.run_attack, []

    def spy(*args, **kwargs):
        calls.append(kwargs | {"images": args[2], "labels": args[3]})
        return real(*args, **kwargs)
    monkeypatch.setattr(utils.attacks, "run_attack", spy)
    flags = ["--checkpoint", str(checkpoint), "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
             "--attacks", "pgd", "--epsilons", "8/255", "--targeted", "yes", "--num_images", "10",
             "--steps", "1", "--examples", "0"]
    call_main(capsys, flags)
    # --num_images 10: the first 10 test images, as its help says
    assert torch.equal(calls[0]["images"], tiny.test_images[:10])
    assert torch.equal(calls[0]["labels"], tiny.test_labels[:10])
    saved = json.loads((tmp_path / ATTACK_RESULTS).read_text())
    assert saved["config"]["seed"] == 3 and [e["seed"] for e in saved["entries"]] == [3]
    assert calls[0]["seed"] == 3
    assert torch.equal(calls[0]["targets"], draw_targets(tiny.test_labels, 10, 3)[:10])
    call_main(capsys, flags + ["--seed", "4"])
    assert calls[1]["seed"] == 4
    assert torch.equal(calls[1]["targets"], draw_targets(tiny.test_labels, 10, 4)[:10])
    assert not torch.equal(calls[0]["targets"], calls[1]["targets"])


def one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(attack.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_missing_checkpoint_names_the_runs_other_placing_flags_name(tmp_path, capsys):
    """A run of the same label, seed and model with another --smoothing, --label_noise, --level or
    --label_granularity is named: the error said only where the given flags pointed."""
    for dataset, level, noise, smoothing in (("cifar10", 100, 0.2, 0.1), ("cifar100_coarse", 2.5, 0.0, 0.0)):
        run_dir = run_directory(tmp_path, dataset, level, 3, "resnet32", "category", noise, smoothing)
        run_dir.mkdir(parents=True)
        (run_dir / "category_seed3_resnet32_best_model.pth").write_bytes(b"not read")
    flags = ["--label", "category", "--seed", "3", "--base_dir", str(tmp_path), "--device", "cpu"]
    line = one_line_error(capsys, flags + ["--label_noise", "0.2"])
    assert (f"no checkpoint at {tmp_path}/cifar10/seed3/resnet32/model_category_noise0.2/category_seed3_"
            f"resnet32_best_model.pth (trained with another --level, --smoothing, --label_noise or "
            f"--label_granularity in {tmp_path}/cifar10/seed3/resnet32/model_category_smooth0.1_noise0.2); "
            "train it with train.py") in line
    line = one_line_error(capsys, flags + ["--dataset", "cifar100"])
    assert f"granularity in {tmp_path}/less/cifar100_coarse/level2.5/seed3/resnet32/model_category); " in line
    assert "trained with another" not in one_line_error(capsys, flags + ["--seed", "4"])


def test_a_granularity_the_dataset_lacks_is_train_pys_error(tmp_path, capsys):
    """--label_granularity coarse without --dataset cifar100 (its default, cifar10) said "no checkpoint at
    .../cifar10_coarse/...; train it with train.py and the same ... flags", which train.py refuses:
    the error is train.py's."""
    line = one_line_error(capsys, ["--label_granularity", "coarse", "--base_dir", str(tmp_path), "--device", "cpu"])
    assert line == "error: cifar10 has no 'coarse' labels; choose from fine"


def test_a_misspelt_label_names_the_labels_trained_beside_it(speech_run, cifar10_dir, label_dir, tmp_path,
                                                             capsys):
    """--label speeh beside a trained model_speech said only 'no checkpoint at .../model_speeh/...';
    the labels of the dataset's, seed's and model's runs are named, as train.py names the label
    files found."""
    for label, smoothing in (("speech", 0.0), ("category", 0.1), ("category", 0.0)):
        run_dir = run_directory(tmp_path, "cifar10", 100, 3, "resnet32", label, smoothing=smoothing)
        run_dir.mkdir(parents=True)
        (run_dir / f"{label}_seed3_resnet32_best_model.pth").write_bytes(b"not read")
    run_directory(tmp_path, "cifar10", 100, 3, "resnet32", "glove").mkdir()  # no checkpoint yet
    run_directory(tmp_path, "cifar10", 100, 4, "resnet32", "bert").mkdir(parents=True)  # another seed
    models = tmp_path / "cifar10" / "seed3" / "resnet32"
    line = one_line_error(capsys, ["--label", "speeh", "--seed", "3", "--base_dir", str(tmp_path),
                                   "--device", "cpu"])
    assert line == (f"error: no checkpoint at {models}/model_speeh/speeh_seed3_resnet32_best_model.pth "
                    f"(labels trained in {models}: category, speech); train it with train.py and the same "
                    "--base_dir/--dataset/--seed/--model/--label/--level/--smoothing/--label_noise/"
                    "--label_granularity, or pass --checkpoint PATH")
    assert "labels trained" not in one_line_error(capsys, ["--label", "speeh", "--seed", "4", "--base_dir",
                                                           str(tmp_path), "--device", "cpu"])
    base, run_dir = speech_run  # train.py's run
    flags = script_flags(cifar10_dir, base, label_dir)
    flags[flags.index("--label") + 1] = "speeh"
    assert f"speeh_seed3_resnet32_best_model.pth (labels trained in {run_dir.parent}: speech); " in (
        one_line_error(capsys, flags))


def test_a_finished_run_without_its_best_checkpoint_says_how_to_train_it_again(tmp_path, capsys):
    """A run copied back without checkpoints: 'no checkpoint ...; train it with train.py' sent the
    user to train.py, which found the run complete and trained nothing."""
    run_dir = run_directory(tmp_path, "cifar10", 100, 3, "resnet32", "category")
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text('{"test_acc": 0.5}')
    line = one_line_error(capsys, ["--label", "category", "--seed", "3", "--base_dir", str(tmp_path),
                                   "--device", "cpu"])
    assert line == (f"error: {run_dir} finished training, but its best checkpoint "
                    "category_seed3_resnet32_best_model.pth is not there (deleted, or not copied with the run's "
                    "files); train the run again with train.py --force and the same flags, or delete the run "
                    "directory and train it anew")


def test_a_run_copied_into_another_seeds_folder_is_refused(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """Seed 3's run copied into seed 4's folder (`cp -r seed3 seed4`), its best checkpoint renamed as
    seed 4's: attack.py --seed 4 attacked seed 3's model without a word and wrote its results there
    as seed 4's, which report.py pools. Refused, as train.py refuses the folder ('holds a finished
    run trained with --seed 3'), from its config.json, or without one from the checkpoint's record.
    With --checkpoint, --seed still only reseeds the targets and random starts."""
    base, run_dir = speech_run
    copy = run_directory(tmp_path, "cifar10", 100, 4, "resnet32", "speech")
    copy.mkdir(parents=True)
    for name in ("config.json", "results.json", "speech_seed3_resnet32_best_model.pth"):
        shutil.copy(run_dir / name, copy)
    flags = script_flags(cifar10_dir, tmp_path, label_dir, "--attacks", "fgsm", "--epsilons", "8/255",
                         "--targeted", "no", "--num_images", "5", "--examples", "0")
    flags[flags.index("--seed") + 1] = "4"
    refused = (f"error: {copy} holds a run trained with --seed 3, not 4, as its config.json records (a copy of "
               "another run's folder?); attack that run with its own flags, in the folder train.py wrote it to, "
               "or train this one there with train.py --force")
    assert one_line_error(capsys, flags) == refused  # said: its best checkpoint ... is not there (deleted ...)
    checkpoint = (copy / "speech_seed3_resnet32_best_model.pth").rename(copy / "speech_seed4_resnet32_best_model.pth")
    assert one_line_error(capsys, flags) == refused
    for name in ("config.json", "results.json"):
        (copy / name).unlink()
    assert one_line_error(capsys, flags) == f"error: {checkpoint} was trained with --seed 3, not 4"
    assert sorted(p.name for p in copy.iterdir()) == [checkpoint.name]  # nothing written as seed 4's
    at = flags.index("--base_dir")
    summary, _ = call_main(capsys, flags[:at] + flags[at + 2:] + ["--checkpoint", str(checkpoint)])
    assert summary["run_dir"] == str(copy) and list(summary["robust_acc"]) == ["fgsm/untargeted/8/255"]


def test_a_base_dir_inside_the_layout_is_refused_with_the_one_to_pass(tmp_path, capsys):
    """--base_dir runs/less (or a dataset's or run's folder) said only 'no checkpoint at
    runs/less/less/cifar10/...'; report.py named the --base_dir meant, as attack.py now does."""
    base = tmp_path / "runs"
    for level, seed in ((100, 3), (4, 12)):
        run_dir = run_directory(base, "cifar10", level, seed, "resnet32", "category")
        run_dir.mkdir(parents=True)
        (run_dir / f"category_seed{seed}_resnet32_best_model.pth").write_bytes(b"not read")
    flags = ["--label", "category", "--seed", "12", "--level", "4", "--device", "cpu"]
    for inside in (base / "less", base / "cifar10" / "seed3", run_dir):
        line = one_line_error(capsys, flags + ["--base_dir", str(inside)])
        assert line == (f"error: --base_dir {inside} is a folder inside the layout of run directories "
                        f"({LAYOUT_TEXT}): pass --base_dir {base}")
    proc = run_script("attack.py", *flags, "--base_dir", base / "less", check=False, env=ONE_THREAD)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr == (
        f"error: --base_dir {base / 'less'} is a folder inside the layout of run directories ({LAYOUT_TEXT}): "
        f"pass --base_dir {base}\n")
    # the folder holding the runs is their --base_dir: on to the checkpoint (a file of no torch.save)
    assert f"{run_dir}/category_seed12_resnet32_best_model.pth is corrupt" in one_line_error(
        capsys, flags + ["--base_dir", str(base)])


def test_bad_input_is_one_line(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    base, run_dir = speech_run
    checkpoint = run_dir / "speech_seed3_resnet32_best_model.pth"
    flags = script_flags(cifar10_dir, base, label_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    line = one_line_error(capsys, script_flags(cifar10_dir, tmp_path, label_dir))
    assert f"no checkpoint at {tmp_path}/cifar10/seed3/resnet32/model_speech/speech_seed3" in line
    line = one_line_error(capsys, flags[:1] + ["vgg19"] + flags[2:] + ["--checkpoint", str(checkpoint)])
    assert "was trained with --model resnet32, not vgg19" in line
    line = one_line_error(capsys, flags[:5] + ["category"] + flags[6:] + ["--checkpoint", str(checkpoint)])
    assert "was trained with --label speech, not category" in line
    line = one_line_error(capsys, flags + ["--dataset", "cifar100", "--checkpoint", str(checkpoint)])
    assert "was trained with --dataset cifar10, not cifar100" in line
    np.save(tmp_path / "cifar10_speech.npy", np.random.rand(10, 48, 48).astype(np.float32))
    other_labels = flags[:flags.index("--label_dir") + 1] + [str(tmp_path)] + flags[flags.index("--base_dir"):]
    line = one_line_error(capsys, other_labels)
    assert "targets of shape (64, 64), but" in line and "holds shape (48, 48)" in line
    (tmp_path / "cifar10_speech.npy").write_bytes(b"\x93NUMPY broken")  # said only: not a readable .npy
    line = one_line_error(capsys, other_labels)
    assert f"label file {tmp_path}/cifar10_speech.npy is not a readable .npy file" in line
    assert line.endswith(f"{checkpoint} carries its own targets, so fix or remove that file, or point "
                         "--label_dir at a folder without it, to attack the run")
    assert "eps 2 is outside [0, 1]" in one_line_error(capsys, flags + ["--epsilons", "0", "2"])
    assert "'x' is not a number or a fraction" in one_line_error(capsys, flags + ["--epsilons", "x"])
    assert "eps 1e-400 is below the smallest float" in one_line_error(capsys, flags + ["--epsilons", "1e-400"])
    assert "invalid choice: 'cw'" in one_line_error(capsys, flags + ["--attacks", "fgsm", "cw"])
    assert "test split has 100 images" in one_line_error(capsys, flags + ["--num_images", "101"])
    assert "--examples: -1 must be at least 0" in one_line_error(capsys, flags + ["--examples", "-1"])
    at = flags.index("--base_dir")  # for a --checkpoint outside it, whose results would go beside it
    loose = flags[:at] + flags[at + 2:]
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    line = one_line_error(capsys, loose + ["--checkpoint", str(tmp_path / "broken.pth")])
    assert "is corrupt" in line and "point --checkpoint at a checkpoint train.py wrote" in line
    assert "(not the zip archive torch.save writes)" in line
    # '' was a TypeError traceback (the flags then found no run); a folder "did not exist"
    assert one_line_error(capsys, flags + ["--checkpoint", ""]) == ("error: argument --checkpoint: must not "
                                                                    "be empty (see attack.py --help)")
    # the run directory for its checkpoint, a likely slip: the line names the file to pass
    line = one_line_error(capsys, flags + ["--checkpoint", str(run_dir)])
    assert line == f"error: --checkpoint {run_dir} is a folder, not a checkpoint file; pass --checkpoint {checkpoint}"
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, flags + ["--checkpoint", str(tmp_path / "empty")])
    assert line == f"error: --checkpoint {tmp_path / 'empty'} is a folder, not a checkpoint file"
    # a torch.save file of another kind (a model's own state_dict, saved by hand)
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "weights.pth")
    line = one_line_error(capsys, loose + ["--checkpoint", str(tmp_path / "weights.pth")])
    assert line == (f"error: {tmp_path / 'weights.pth'} is not a best-model checkpoint of train.py (it lacks "
                    "model, model_args or label_space)")
    assert not (tmp_path / ".lock").exists()  # bad input ends before the folder is locked
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing was written


@pytest.mark.parametrize("flag, value, reason", [
    # wrote robust accuracy 0 of 0 images; -1 attacked all but the last image, recorded as -1 images
    ("num_images", 0, "0 must be positive"), ("num_images", -1, "-1 must be positive"),
    ("num_images", 2.5, "'2.5' is not an int"),  # a TypeError traceback
    ("batch_size", 0, "0 must be positive"),  # ValueError: range() arg 3 must not be zero
    ("batch_size", -1, "-1 must be positive"),  # attacked no batch: clean and robust accuracy 0 of 5 images
    ("examples", -1, "-1 must be at least 0"),  # accepted, silently no figure
    ("targeted", "maybe", "invalid choice: 'maybe' (choose from 'no', 'yes', 'both')"),  # KeyError: 'maybe'
    ("attacks", [], "expected at least one argument"),  # attacked with every attack
])
def test_a_notebooks_values_are_checked_as_on_the_command_line(flag, value, reason, speech_run, cifar10_dir,
                                                               tmp_path, capsys):
    """attack.run(args) from a notebook, which no parser read, refuses what the command line
    refuses, with its line, before the run is locked."""
    args = attack.build_parser().parse_args(one_fgsm(copied_checkpoint(speech_run, tmp_path), cifar10_dir,
                                                     tmp_path))
    setattr(args, flag, value)
    with pytest.raises(UsageError) as err:
        attack.run(args)
    assert str(err.value) == f"argument --{flag}: {reason} (see attack.py --help)"
    cli = [f"--{flag}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    assert one_line_error(capsys, cli) == f"error: {err.value}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech_seed3_resnet32_best_model.pth"]


def test_a_notebooks_parsed_namespace_with_values_of_its_own_runs(speech_run, cifar10_dir, label_dir, tmp_path,
                                                                  capsys):
    """A namespace from the parser, edited in a notebook with values the command line would take
    (a Path, an eps as its text, a numpy int), is attacked: a string eps was 'ValueError: too many
    values to unpack'."""
    args = attack.build_parser().parse_args(one_fgsm(copied_checkpoint(speech_run, tmp_path), cifar10_dir,
                                                     label_dir))
    args.checkpoint, args.data_dir = tmp_path / "speech_seed3_resnet32_best_model.pth", Path(cifar10_dir)
    args.epsilons, args.num_images = ["8/255"], np.int64(4)
    summary = attack.run(args)
    assert list(summary["robust_acc"]) == ["fgsm/untargeted/8/255"] and summary["num_images"] == 4
    entry, = json.loads((tmp_path / "attack_results.json").read_text())["entries"]
    assert (entry["eps"], entry["eps_label"]) == (8 / 255, "8/255")


def test_num_images_may_be_the_whole_test_split(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """--num_images 100 of a test split of 100 images attacks every one of them."""
    _, run_dir = speech_run
    copy = tmp_path / "speech_seed3_resnet32_best_model.pth"  # results of its own, beside it
    shutil.copy(run_dir / copy.name, copy)
    summary, _ = call_main(capsys, script_flags(cifar10_dir, tmp_path, label_dir, "--checkpoint", copy, "--attacks",
                                                "fgsm", "--targeted", "no", "--epsilons", "0", "--num_images",
                                                "100", "--examples", "0"))
    assert summary["num_images"] == 100 and list(summary["robust_acc"]) == ["fgsm/untargeted/0"]


def test_a_negative_eps_is_named_with_its_flag(capsys):
    """"--epsilons -1/255" said "expected at least one argument" (argparse took -1/255 for a flag),
    and "--epsilons 0 -1/255" "unrecognized arguments: -1/255"."""
    for epsilons in (["-1/255"], ["0", "-1/255"], ["-1e-3"]):
        assert one_line_error(capsys, ["--epsilons", *epsilons]) == (
            f"error: argument --epsilons: eps {epsilons[-1]} is outside [0, 1] (see attack.py --help)")
    assert one_line_error(capsys, ["--epsilons", "8/255", "-x"]) == ("error: unrecognized arguments: -x "
                                                                    "(see attack.py --help)")


def test_a_step_size_is_written_as_an_eps_is(capsys):
    """--step_size 2/255 beside --epsilons 8/255 was "'2/255' is not a float"; and an eps of 8, the
    scale of tables in grey levels, now says how to write it in the images' [0, 1], naming the
    pixel units it applies to (with --paper_protocol's normalised units, '1.5/255' is no grey level)."""
    assert attack.build_parser().parse_args(["--step_size", "2/255"]).step_size == 2 / 255
    assert attack.build_parser().parse_args(["--step_size", "0.5"]).step_size == 0.5
    for text in ("0", "-1/255"):
        assert one_line_error(capsys, ["--step_size", text]) == (
            f"error: argument --step_size: {text} must be positive (see attack.py --help)")
    assert "'x' is not a number or a fraction like 8/255" in one_line_error(capsys, ["--step_size", "x"])
    assert one_line_error(capsys, ["--epsilons", "0", "8"]) == (
        "error: argument --epsilons: eps 8 is outside [0, 1]; for 8 of 255 grey levels (pixel units, "
        "without --paper_protocol) write 8/255 (see attack.py --help)")


def test_a_step_size_in_grey_levels_is_refused_as_an_eps_is(capsys):
    """--step_size 2, many papers' PGD step of 2 grey levels (alpha = 2), was taken as 2 in the
    images' [0, 1]: every step jumped to a corner of the eps-ball, an attack other than the one
    meant (iterative at 8/255 on the real subset's category run: 10% robust on 20 images, 0% with
    2/255), where --epsilons 8 is refused with the way to write it."""
    assert one_line_error(capsys, ["--step_size", "2"]) == (
        "error: argument --step_size: step size 2 is above 1; for 2 of 255 grey levels (pixel units, "
        "without --paper_protocol) write 2/255 (see attack.py --help)")
    assert one_line_error(capsys, ["--step_size", "300"]) == (
        "error: argument --step_size: step size 300 is above 1 (see attack.py --help)")
    assert attack.build_parser().parse_args(["--step_size", "1"]).step_size == 1.0


def test_an_eps_or_step_size_too_large_for_a_float_is_one_line(capsys):
    """--epsilons 1e400 and --step_size 1e400 were OverflowError tracebacks (the Fraction's float)."""
    assert one_line_error(capsys, ["--epsilons", "0", "1e400"]) == (
        "error: argument --epsilons: eps 1e400 is outside [0, 1] (see attack.py --help)")
    assert one_line_error(capsys, ["--step_size", "1e400"]) == (
        "error: argument --step_size: step size 1e400 is above the largest float (see attack.py --help)")


def test_an_unfinished_run_is_not_attacked(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """Its best checkpoint may still change: results on it were counted as the finished run's by
    sweep.py and report.py after train.py --resume had replaced the checkpoint."""
    shutil.copytree(speech_run[0], tmp_path / "runs")
    run_dir = tmp_path / "runs" / "cifar10" / "seed3" / "resnet32" / "model_speech"
    (run_dir / "results.json").unlink()  # stopped after its last epoch, as a preempted run
    (run_dir / ATTACK_RESULTS).unlink(missing_ok=True)  # from tests before this one
    for extra in ([], ["--checkpoint", str(run_dir / "speech_seed3_resnet32_best_model.pth")]):
        line = one_line_error(capsys, script_flags(cifar10_dir, tmp_path / "runs", label_dir, *extra))
        assert f"{run_dir} has not finished training (it has config.json but no results.json)" in line
        assert "finish it with train.py --resume" in line
    assert not (run_dir / ATTACK_RESULTS).exists()


def test_a_checkpoint_written_again_while_the_job_starts_is_attacked_as_it_is_then(
        speech_run, cifar10_dir, label_dir, tmp_path, capsys, monkeypatch):
    """attack.py loaded the checkpoint before it locked the run directory: a train.py that wrote its
    final best checkpoint and ended in between (an attack started while the run trained its last
    epoch) left the job attacking the weights it had loaded while attack_results.json named the
    file's sha256, so sweep.py and report.py counted an earlier epoch's robust accuracy as the
    finished run's. A folder with a lock file is now locked before the load, but a file may still
    change during it (a copy over it by hand, a file system without locks): under the lock the
    file is read again where it changed."""
    import cifar
    shutil.copytree(speech_run[0], tmp_path / "runs")
    run_dir = tmp_path / "runs" / "cifar10" / "seed3" / "resnet32" / "model_speech"
    (run_dir / ATTACK_RESULTS).unlink(missing_ok=True)  # from tests before this one
    best = run_dir / "speech_seed3_resnet32_best_model.pth"
    final = tmp_path / "final.pth"  # the weights train.py's last epochs leave: others
    state, generator = torch.load(best, weights_only=True), torch.Generator().manual_seed(0)
    state["model"] = {k: v * (1 + torch.randn(v.shape, generator=generator).abs()) if v.is_floating_point()
                      else v for k, v in state["model"].items()}
    torch.save(state, final)
    flags = script_flags(cifar10_dir, tmp_path / "runs", label_dir, "--attacks", "fgsm", "--epsilons", "0",
                         "--targeted", "no", "--num_images", "100", "--examples", "0")
    (tmp_path / "trained").mkdir()
    trained = shutil.copy(best, tmp_path / "trained")  # each in a folder of its own: no race
    at = flags.index("--base_dir")  # which holds neither copy: their results go beside them
    own = flags[:at] + flags[at + 2:]
    before = call_main(capsys, own + ["--checkpoint", str(trained)])[0]["clean_acc"]
    after = call_main(capsys, own + ["--checkpoint", str(final)])[0]["clean_acc"]
    assert before != after
    loaded = cifar.load_cifar

    def training_ends(*args, **kwargs):  # between the checkpoint's load and the lock
        if not filecmp.cmp(best, final, shallow=False):  # once
            os.replace(shutil.copy(final, run_dir / "new.pth"), best)
        return loaded(*args, **kwargs)
    monkeypatch.setattr(cifar, "load_cifar", training_ends)
    summary, err = call_main(capsys, flags)
    written = json.loads((run_dir / ATTACK_RESULTS).read_text())
    assert summary["clean_acc"] == written["clean_acc"] == after
    assert written["checkpoint_sha256"] == file_sha256(best)
    # not "its run ended meanwhile": a file given as --checkpoint may be one copied over by hand
    assert f"note: {best} was written again since this job loaded it (its run's final checkpoint, or a copy " \
           "over it); attacking it as it is now\n" in err
    monkeypatch.setattr(cifar, "load_cifar", loaded)
    assert call_main(capsys, flags)[0]["clean_acc"] == after  # reused: the file's own results


def test_a_runs_last_checkpoint_is_not_attacked_in_its_folder(speech_run, cifar10_dir, label_dir, tmp_path,
                                                               capsys):
    """Results there would be counted by sweep.py and report.py as the run's best checkpoint's; a
    copy in a folder of its own is attacked."""
    _, run_dir = speech_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    last = run_dir / "last_checkpoint.pth"
    small = ["--data_dir", str(cifar10_dir), "--label_dir", str(label_dir), "--attacks", "fgsm",
             "--targeted", "no", "--epsilons", "8/255", "--num_images", "5", "--examples", "0"]
    line = one_line_error(capsys, ["--checkpoint", str(last), *small])
    assert line == (f"error: {last} is the last checkpoint of train.py's run in {run_dir}, where attack "
                    "results count as the run's best checkpoint's; attack a copy of it in a folder of its own")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    copy = shutil.copy(last, tmp_path)
    summary, _ = call_main(capsys, ["--checkpoint", str(copy), *small])
    assert summary["run_dir"] == str(tmp_path) and (tmp_path / ATTACK_RESULTS).exists()


def test_a_checkpoints_level_and_noise_are_its_own(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """With --checkpoint, --level, --label_noise and --smoothing were ignored: attack_results.json's
    config recorded the defaults (level 100) for a run trained on 25% of the data. Unset, they are
    the checkpoint's; given, they must be its, but for a flag that acted on nothing."""
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    checkpoint["config"]["flags"] |= {"level": 25, "label_noise": 0.1}  # as a run of those flags records
    copy = tmp_path / "speech_seed3_resnet32_best_model.pth"
    torch.save(checkpoint, copy)
    small = ["--checkpoint", str(copy), "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
             "--attacks", "fgsm", "--targeted", "no", "--epsilons", "8/255", "--num_images", "5",
             "--examples", "0"]
    assert f"{copy} was trained with --level 25, not 100" in one_line_error(capsys, small + ["--level", "100"])
    line = one_line_error(capsys, small + ["--label_noise", "0"])
    assert f"{copy} was trained with --label_noise 0.1, not 0.0" in line
    call_main(capsys, small + ["--level", "25", "--smoothing", "0.1"])  # smoothing acts on no speech run
    config = json.loads((tmp_path / ATTACK_RESULTS).read_text())["config"]
    assert (config["level"], config["label_noise"]) == (25, 0.1)


def test_an_unset_data_dir_is_the_one_the_run_trained_on(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """Without --data_dir attack.py reads the test images of the folder the checkpoint's run trained
    on (sweep.py compares those with the entries' images); a folder no longer there is one error
    line that says so, not a download into it or an attack on the default folder's images."""
    from utils.grid import test_images_sha256
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    copy = tmp_path / "speech_seed3_resnet32_best_model.pth"
    flags = ["--checkpoint", str(copy), "--label_dir", str(label_dir), "--attacks", "fgsm", "--targeted",
             "no", "--epsilons", "8/255", "--num_images", "5", "--examples", "0"]
    assert checkpoint["config"]["flags"]["data_dir"] == str(cifar10_dir)
    torch.save(checkpoint, copy)
    call_main(capsys, flags)
    [entry] = json.loads((tmp_path / ATTACK_RESULTS).read_text())["entries"]
    assert entry["images_sha256"] == test_images_sha256("cifar10", cifar10_dir, "fine", 5)
    checkpoint["config"]["flags"]["data_dir"] = str(tmp_path / "gone")
    torch.save(checkpoint, copy)
    assert one_line_error(capsys, flags) == (f"error: {copy} was trained on the data in {tmp_path / 'gone'}, "
                                             "which is not here; pass --data_dir with the folder of its "
                                             "dataset on this machine")


def test_the_attacked_checkpoint_is_known_unread_and_another_is_found(speech_run, label_dir, cifar10_dir,
                                                                     tmp_path, capsys, monkeypatch):
    """attack_results.json records the checkpoint's size and mtime beside its sha256: sweep.py and
    report.py know it unread where it is still that file, and read one copied over it with its
    own older mtime (cp -p of another run's), which attack.py then attacks anew."""
    import utils.grid
    from utils.grid import attacked_another
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    flags = one_fgsm(checkpoint, cifar10_dir, label_dir)
    call_main(capsys, flags)
    results = json.loads((tmp_path / ATTACK_RESULTS).read_text())
    assert (results["checkpoint_mtime"], results["checkpoint_size"]) == (checkpoint.stat().st_mtime,
                                                                         checkpoint.stat().st_size)
    with monkeypatch.context() as patched:
        patched.setattr(utils.grid, "file_sha256", lambda path: pytest.fail(f"{path} was read"))
        assert not attacked_another(tmp_path / ATTACK_RESULTS, results, checkpoint)
        # a copy with a new mtime (cp -r, scp -r): its zip index alone is read, not its bytes
        os.utime(checkpoint, (results["checkpoint_mtime"] + 3600,) * 2)
        assert not attacked_another(tmp_path / ATTACK_RESULTS, results, checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, checkpoint)
    os.utime(checkpoint, (results["checkpoint_mtime"] - 3600,) * 2)
    assert attacked_another(tmp_path / ATTACK_RESULTS, results, checkpoint)
    _, err = call_main(capsys, flags)
    assert "dropping 1 entry computed on another checkpoint" in err


def test_the_checkpoint_is_read_once_and_recorded_as_read(speech_run, label_dir, cifar10_dir, tmp_path,
                                                          capsys, monkeypatch):
    """attack.py loaded the checkpoint, checked its CRCs, took its sha256 and read its zip index in
    four opens of the file (three reads of all of it: 240 MB for a vgg19's 80 MB on a network file
    system); now one read gives all, and attack_results.json records the same as before."""
    import builtins
    import io
    from utils.runs import file_sha256, zip_index_sha256
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    opened, real_open = [], builtins.open

    def spying_open(file, *args, **kwargs):  # torch.load and file_sha256 use open, zipfile io.open
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == checkpoint.resolve():
            opened.append(file)
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", spying_open)
    monkeypatch.setattr(io, "open", spying_open)
    call_main(capsys, ["--checkpoint", str(checkpoint), "--data_dir", str(cifar10_dir), "--label_dir",
                       str(label_dir), "--attacks", "fgsm", "--targeted", "no", "--epsilons", "8/255",
                       "--num_images", "5", "--examples", "0"])
    monkeypatch.undo()
    assert len(opened) == 1, opened
    results = json.loads((tmp_path / ATTACK_RESULTS).read_text())
    written = checkpoint.stat()
    assert {k: results[k] for k in ("checkpoint_sha256", "checkpoint_mtime", "checkpoint_size",
                                    "checkpoint_index_sha256")} == {
        "checkpoint_sha256": file_sha256(checkpoint), "checkpoint_mtime": written.st_mtime,
        "checkpoint_size": written.st_size, "checkpoint_index_sha256": zip_index_sha256(checkpoint)}


def test_a_label_of_your_own_is_checked_against_the_runs_label_folder(cifar10_dir, tmp_path, capsys):
    """A run trained on targets of its own under a shipped name (speech, (10, 7), in its own
    --label_dir) was refused by attack.py without --label_dir: it checked the shipped 64x64 speech
    file against the checkpoint, though the checkpoint carries its own targets."""
    import train
    own = tmp_path / "my_labels"
    own.mkdir()
    np.save(own / "cifar10_speech.npy", np.random.RandomState(0).rand(10, 7).astype(np.float32))
    run = ["--label", "speech", "--seed", "3", "--base_dir", str(tmp_path), "--device", "cpu"]
    train.main(run + ["--data_dir", str(cifar10_dir), "--label_dir", str(own), "--valid_size", "50",
                      "--epochs", "1"])
    attack_flags = run + ["--attacks", "fgsm", "--targeted", "no", "--epsilons", "8/255", "--num_images", "5",
                          "--examples", "0"]
    summary, _ = call_main(capsys, attack_flags)
    assert summary["run_dir"] == str(tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech")
    checkpoint = Path(summary["run_dir"]) / "speech_seed3_resnet32_best_model.pth"
    shipped = Path(attack.__file__).parent / "labels" / "label_files"
    line = one_line_error(capsys, attack_flags + ["--label_dir", str(shipped)])  # given, it is checked
    assert line == (f"error: {checkpoint} was trained on speech targets of shape (7,), but "
                    f"{shipped}/cifar10_speech.npy holds shape (64, 64); it carries its own targets, so "
                    "point --label_dir at the folder it was trained from, or at one without that file, "
                    "to attack the run")
    # the same shape, other values (a file regenerated since): the checkpoint's targets, and a note
    np.save(own / "cifar10_speech.npy", np.random.RandomState(2).rand(10, 7).astype(np.float32))
    again, err = call_main(capsys, attack_flags + ["--epsilons", "4/255"])
    assert again["robust_acc"]["fgsm/untargeted/8/255"] == summary["robust_acc"]["fgsm/untargeted/8/255"]
    assert (f"note: {own}/cifar10_speech.npy holds other speech targets than {checkpoint} was trained on "
            "(a file changed or regenerated since); the attacks use the checkpoint's") in err
    (own / "cifar10_speech.npy").unlink()  # the checkpoint's targets are all an attack needs
    assert call_main(capsys, attack_flags)[0]["robust_acc"] == summary["robust_acc"]
    np.save(own / "cifar10_speech.npy", np.random.RandomState(1).rand(10, 8).astype(np.float32))
    line = one_line_error(capsys, attack_flags)  # regenerated in another shape: not the run's targets
    assert f"of shape (7,), but {own}/cifar10_speech.npy holds shape (8,); it carries" in line


def test_a_coarse_run_is_attacked_beside_the_fine_label_file(cifar100_dir, label_dir, tmp_path, capsys):
    """The run's label folder holds 20 targets; attack.py's default one the 100 of the fine
    classes, under the same name. It refused the run ("has 100 class targets, but the dataset has
    20") though the checkpoint carries its own targets."""
    import train
    coarse = tmp_path / "coarse_labels"
    coarse.mkdir()
    np.save(coarse / "cifar100_speech.npy", np.random.RandomState(0).uniform(-80, 0, (20, 64, 64))
            .astype(np.float32))
    run = ["--dataset", "cifar100", "--label_granularity", "coarse", "--label", "speech", "--seed", "3",
           "--data_dir", str(cifar100_dir), "--base_dir", str(tmp_path), "--device", "cpu"]
    train.main(run + ["--label_dir", str(coarse), "--valid_size", "50", "--epochs", "1"])
    summary, _ = call_main(capsys, run + ["--label_dir", str(label_dir), "--attacks", "fgsm",
                                          "--epsilons", "8/255", "--num_images", "5", "--examples", "0"])
    assert summary["run_dir"] == str(tmp_path / "cifar100_coarse" / "seed3" / "resnet32" / "model_speech")
    checkpoint = Path(summary["run_dir"]) / "speech_seed3_resnet32_best_model.pth"
    copy = tmp_path / "copy" / checkpoint.name  # the checkpoint alone says which data it was trained on
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    again, _ = call_main(capsys, ["--checkpoint", str(copy), "--data_dir", str(cifar100_dir), "--attacks", "fgsm",
                                  "--epsilons", "8/255", "--num_images", "5", "--examples", "0", "--device", "cpu"])
    assert again["robust_acc"] == summary["robust_acc"] and again["run_dir"] == str(copy.parent)
    config = json.loads((copy.parent / "attack_results.json").read_text())["config"]
    assert (config["dataset"], config["label_granularity"], config["seed"]) == ("cifar100", "coarse", 3)


def model_args(**values):
    return {"model_args": {"arch": "resnet32", "output_shape": [64, 64], "mean": [0.5] * 3, "std": [0.2] * 3,
                           **values}}


def speech_space(**values):
    return {"label_space": {"name": "speech", "num_classes": 10, "targets": torch.rand(10, 64, 64), **values}}


@pytest.mark.parametrize("change, reason", [
    ({"model_args": [1, 2]}, ""), ({"model_args": {}}, ""), ({"label_space": None}, ""),
    ({"label_space": {"name": "xyz"}}, ""), ({"config": [1]}, ""), ({"config": {"flags": [1]}}, ""),
    ({"model": None}, ""),
    ({"config": {"flags": {"seed": "x"}}}, ""),  # a RuntimeError traceback from torch's manual_seed
    # a TypeError traceback (unhashable) from the dataset's facts; attacked as the run's level 'abc'
    ({"config": {"flags": {"label_granularity": ["x"]}}}, "(TypeError: its config's label_granularity ['x'] is "
                                                          "not text)"),
    ({"config": {"flags": {"level": "abc"}}}, "(TypeError: its config's level 'abc' is not a number)"),
    (model_args(output_shape=[-5]), ""),
    (model_args(arch=9), f"(ValueError: unknown model 9; choose from {', '.join(ARCHITECTURES)})"),
    # attacked: NaN outputs, decoded as some class
    (model_args(std=[0.0] * 3), "(ValueError: normalisation std [0.0, 0.0, 0.0] is not 3 finite numbers, each "
                                "above 0)"),
    (model_args(std=[float("nan")] * 3), "normalisation std [nan, nan, nan] is not"),
    (model_args(mean=[float("inf")] * 3), "(ValueError: normalisation mean [inf, inf, inf] is not 3 finite "
                                          "numbers)"),
    # a traceback for a category checkpoint (torch.randint's), or "label speech: class 1's own target ...",
    # or attacked
    ({"label_space": {"name": "category", "num_classes": 10.0}}, "(ValueError: its label space 'category' "
                                                                 "has 10.0 classes, not a name and a whole"),
    # the flag's message, "--smoothing 2.0 must lie in ...", for a flag never given
    ({"label_space": {"name": "category", "num_classes": 10, "smoothing": 2.0}},
     "(ValueError: its label smoothing 2.0 is not a number in [0, 0.9])"),
    (speech_space(targets=torch.full((10, 64, 64), float("nan"))), "(LabelError: its speech label space "
                                                                  "contains NaN or infinite values)"),
    (speech_space(targets=torch.ones(10, 64, 64, dtype=torch.long)), "(ValueError: its speech targets are not "
                                                                     "a float tensor of 10 class targets)"),
    (speech_space(targets=torch.rand(5, 64, 64)), "its speech targets are not a float tensor of 10 class"),
])
def test_a_checkpoint_with_entries_of_another_form_is_one_line(speech_run, cifar10_dir, label_dir, tmp_path,
                                                               capsys, change, reason):
    """Each was a TypeError, KeyError, AttributeError or RuntimeError traceback, or attacked."""
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    torch.save(checkpoint | change, tmp_path / "edited.pth")
    line = one_line_error(capsys, ["--checkpoint", str(tmp_path / "edited.pth"), "--data_dir", str(cifar10_dir),
                                   "--label_dir", str(label_dir), "--num_images", "5"])
    assert line.startswith(f"error: checkpoint {tmp_path / 'edited.pth'} holds entries train.py did not "
                           "write (") and line.endswith("point --checkpoint at a checkpoint train.py "
                                                        "wrote, or train the run again"), line
    assert reason in line
    assert not (tmp_path / ATTACK_RESULTS).exists()


@pytest.mark.parametrize("name, reason", [
    ("old/../../secret", "'old/../../secret' is not a label name: it names the label file {dataset}_NAME.npy and "
                         "the run directory model_NAME, so it must be non-empty and hold no /"),
    ("", "'' is not a label name"), ("speech_noise0.2", "speech_noise0.2 ends like the run directory of a "
                                                        "--label_noise run")])
def test_a_label_name_train_py_refuses_is_refused_in_a_checkpoint(speech_run, cifar10_dir, tmp_path, capsys,
                                                                   name, reason):
    """The label file is found by the checkpoint's label name, which no flag checked: one edited to
    'old/../../secret' had attack.py read {label_dir}/cifar10_old/../../secret.npy, a file outside
    --label_dir (here it said that file's shape did not fit; an empty name attacked as label '').
    A name train.py's --label refuses is now refused as the file's, before any label file is read."""
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    torch.save(checkpoint | speech_space(name=name), tmp_path / "edited.pth")
    (tmp_path / "labels" / "cifar10_old").mkdir(parents=True)
    np.save(tmp_path / "secret.npy", np.zeros((10, 7), np.float32))  # outside --label_dir
    line = one_line_error(capsys, ["--checkpoint", str(tmp_path / "edited.pth"), "--data_dir", str(cifar10_dir),
                                   "--label_dir", str(tmp_path / "labels"), "--num_images", "5"])
    assert line.startswith(f"error: {tmp_path / 'edited.pth'} records a label name train.py refuses: {reason}")
    assert line.endswith("; point --checkpoint at a checkpoint train.py wrote, or train the run again"), line
    assert not (tmp_path / ATTACK_RESULTS).exists()


def test_weights_that_do_not_fit_are_found_before_the_network_is_built(speech_run, cifar10_dir, label_dir,
                                                                      tmp_path, capsys, monkeypatch):
    """A checkpoint's model_args name outputs its weights do not hold: the network was built for real
    first, its weights allocated and initialised, and only then found not to fit. A file of a few kB
    naming outputs (4096, 4096) made attack.py (and model_from_checkpoint, in a notebook) build a
    decoder whose first kernel holds 268 million weights (1 GB; 10**8 category classes, 25 GB)
    before its error line. Now the shapes are compared on a network of shapes alone (the meta
    device), and no network is built for real."""
    import architecture
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    torch.save(checkpoint | model_args(output_shape=[4096, 4096]), tmp_path / "edited.pth")
    built, build = [], architecture.build_model

    def recorded(*args, **kwargs):
        model = build(*args, **kwargs)
        built.append(next(model.parameters()).device.type)
        return model
    monkeypatch.setattr(architecture, "build_model", recorded)
    line = one_line_error(capsys, ["--checkpoint", str(tmp_path / "edited.pth"), "--data_dir", str(cifar10_dir),
                                   "--label_dir", str(label_dir), "--num_images", "5"])
    assert line == (f"error: {tmp_path / 'edited.pth'}: the weights do not fit a resnet32 with outputs (4096, "
                    "4096) (head.deconvs.0.weight: (64, 64, 4, 4) in the file, (64, 64, 256, 256) in the network)")
    assert built == ["meta"]


def test_a_checkpoint_of_a_network_this_checkout_lacks_says_to_register_it(speech_run, cifar10_dir, tmp_path,
                                                                           capsys, monkeypatch):
    """A researcher's resnet56, trained in a checkout whose ARCHITECTURES had it, was 'entries train.py
    did not write (...); ... train the run again'; the line now names the network and where it goes.
    (A network this checkout lacks: docs/reference.md's example, resnet56, may be registered here.)"""
    _, run_dir = speech_run
    arch = next(f"resnet{6 * n + 2}" for n in itertools.count(9) if f"resnet{6 * n + 2}" not in ARCHITECTURES)
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    path = tmp_path / arch / f"speech_seed3_{arch}_best_model.pth"
    path.parent.mkdir()
    torch.save(checkpoint | model_args(arch=arch, output_shape=[64, 64]), path)
    line = one_line_error(capsys, ["--checkpoint", str(path), "--data_dir", str(cifar10_dir),
                                   "--num_images", "5"])
    assert line == (f"error: {path} holds a {arch}, a network this checkout's architecture.py does not "
                    f"register (it has {', '.join(ARCHITECTURES)}); add its entry to ARCHITECTURES there, "
                    "as in the checkout that trained it")
    # Registered (here under resnet32's entry, which these weights fit), it loads.
    monkeypatch.setitem(ARCHITECTURES, arch, ARCHITECTURES["resnet32"])
    model, _, _ = attack.model_from_checkpoint(path)
    assert model.model_args["arch"] == arch


def test_a_base_dir_given_with_a_checkpoint_must_hold_its_folder(speech_run, cifar10_dir, label_dir, tmp_path,
                                                                 capsys):
    """--base_dir was ignored with --checkpoint: the results went to the checkpoint's folder, not
    under the --base_dir asked for, and nothing said so. A --base_dir that holds that folder is
    where they go; one that does not is one error line, before any attack."""
    (tmp_path / "elsewhere").mkdir()
    checkpoint = copied_checkpoint(speech_run, tmp_path / "elsewhere")
    line = one_line_error(capsys, one_fgsm(checkpoint, cifar10_dir, label_dir) + ["--base_dir",
                                                                                  str(tmp_path / "wanted")])
    assert line == (f"error: --base_dir {tmp_path / 'wanted'} does not hold --checkpoint's folder "
                    f"{tmp_path / 'elsewhere'}, where its results go; leave out --base_dir, or copy the "
                    f"checkpoint into a folder of its own under {tmp_path / 'wanted'} and attack that copy")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["elsewhere", checkpoint.name]
    summary, _ = call_main(capsys, one_fgsm(checkpoint, cifar10_dir, label_dir) + ["--base_dir", str(tmp_path)])
    assert summary["results"] == str(checkpoint.parent / ATTACK_RESULTS)


def test_a_base_dir_holds_a_checkpoint_reached_through_a_linked_folder_of_its_layout(speech_run, cifar10_dir,
                                                                                      label_dir, tmp_path, capsys):
    """A folder of the layout may be a link (a seed's runs on another disk), which report.py and the
    flags read through: a --checkpoint given through it, with the --base_dir it is under, was refused
    as outside that --base_dir (the link's target is). It is attacked, its results beside it, where
    report.py reads them; a '..' after the link, which leaves for the target's parent, is refused."""
    (tmp_path / "disk" / "model_speech").mkdir(parents=True)
    checkpoint = copied_checkpoint(speech_run, tmp_path / "disk" / "model_speech")
    (tmp_path / "base" / "cifar10" / "seed3").mkdir(parents=True)
    (tmp_path / "base" / "cifar10" / "seed3" / "resnet32").symlink_to(tmp_path / "disk")
    linked = tmp_path / "base" / "cifar10" / "seed3" / "resnet32" / "model_speech" / checkpoint.name
    base = ["--base_dir", str(tmp_path / "base")]
    summary, _ = call_main(capsys, one_fgsm(linked, cifar10_dir, label_dir) + base)
    assert summary["results"] == str(checkpoint.parent / ATTACK_RESULTS)
    (tmp_path / "elsewhere").mkdir()
    outside = copied_checkpoint(speech_run, tmp_path / "elsewhere")
    line = one_line_error(capsys, one_fgsm(tmp_path / "base" / "cifar10" / "seed3" / "resnet32" / ".." / "elsewhere"
                                           / outside.name, cifar10_dir, label_dir) + base)
    assert line.startswith(f"error: --base_dir {tmp_path / 'base'} does not hold --checkpoint's folder "
                           f"{tmp_path / 'elsewhere'}, where its results go"), line


def test_a_folder_named_attack_results_json_is_named_in_the_error(speech_run, cifar10_dir, label_dir, tmp_path,
                                                                   capsys):
    """The error named the folder in attack_results.json's place by its descriptor's number
    ('error: cannot use 7: Is a directory'), not by its path."""
    checkpoint = copied_checkpoint(speech_run, tmp_path)
    (tmp_path / ATTACK_RESULTS).mkdir()
    line = one_line_error(capsys, one_fgsm(checkpoint, cifar10_dir, label_dir))
    assert line == f"error: cannot use {tmp_path / ATTACK_RESULTS}: Is a directory"


def test_weights_that_do_not_fit_the_network_are_one_line(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """A checkpoint whose weights lack one of the network's entries, or hold one more (one saved by
    hand from another revision of it), is refused in one line naming the network: the missing
    entry found on the network's shapes before it is built, the extra one with torch's reason."""
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    name = next(k for k in checkpoint["model"] if k.endswith("weight"))
    argv = ["--checkpoint", str(tmp_path / "other.pth"), "--data_dir", str(cifar10_dir),
            "--label_dir", str(label_dir), "--num_images", "5"]
    start = f"error: {tmp_path / 'other.pth'}: the weights do not fit a resnet32 with outputs (64, 64) ("
    torch.save(checkpoint | {"model": {k: v for k, v in checkpoint["model"].items() if k != name}},
               tmp_path / "other.pth")
    assert one_line_error(capsys, argv) == f"{start}{name}: not in the file)"
    torch.save(checkpoint | {"model": checkpoint["model"] | {"extra.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    line = one_line_error(capsys, argv)
    assert line.startswith(f"{start}Error(s) in loading state_dict for "), line
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in line
    assert not (tmp_path / ATTACK_RESULTS).exists()


def test_a_model_whose_outputs_are_not_its_targets_shape_is_one_line(speech_run, cifar10_dir, label_dir,
                                                                     tmp_path, capsys):
    """Weights that fit a network of (64, 64) outputs beside speech targets stored flattened: every
    output would be compared with a target of another shape. Refused, naming both shapes."""
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    checkpoint["label_space"]["targets"] = checkpoint["label_space"]["targets"].flatten(1)
    torch.save(checkpoint, tmp_path / "flat.pth")
    line = one_line_error(capsys, ["--checkpoint", str(tmp_path / "flat.pth"), "--data_dir", str(cifar10_dir),
                                   "--label_dir", str(label_dir), "--num_images", "5"])
    assert line == (f"error: {tmp_path / 'flat.pth'}: the model outputs (64, 64) but its speech targets "
                    "have shape (4096,)")
    assert not (tmp_path / ATTACK_RESULTS).exists()


def test_a_diverged_checkpoint_is_refused(speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    """A model with NaN weights outputs NaN, decoded as some class: its 'robust accuracy' was a
    number that measured nothing."""
    _, run_dir = speech_run
    checkpoint = torch.load(run_dir / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    name = next(k for k in checkpoint["model"] if k.endswith("weight"))
    checkpoint["model"][name] = torch.full_like(checkpoint["model"][name], float("nan"))
    torch.save(checkpoint, tmp_path / "diverged.pth")
    line = one_line_error(capsys, ["--checkpoint", str(tmp_path / "diverged.pth"), "--data_dir",
                                   str(cifar10_dir), "--label_dir", str(label_dir), "--num_images", "5"])
    assert line == (f"error: {tmp_path / 'diverged.pth'} holds NaN or infinite weights ({name}): its run "
                    "diverged, and attacks on it measure nothing; train it again (a lower --lr may help)")
    assert not (tmp_path / ATTACK_RESULTS).exists()


def test_a_damaged_checkpoints_zip_index_is_no_traceback(tmp_path):
    """A corrupted copy's central directory (a stored name no longer UTF-8, an unknown zip
    version) raised UnicodeDecodeError or NotImplementedError out of sweep.py and report.py; it is
    no index, and attacked_another hashes the file's bytes, as for any other file."""
    from utils.grid import attacked_another
    from utils.runs import file_sha256, zip_index_sha256
    checkpoint = tmp_path / "best_checkpoint.pth"
    torch.save({"w": torch.ones(3)}, checkpoint)
    written = checkpoint.stat()
    results = {"checkpoint_sha256": file_sha256(checkpoint), "checkpoint_mtime": written.st_mtime,
               "checkpoint_size": written.st_size, "checkpoint_index_sha256": zip_index_sha256(checkpoint)}
    data = bytearray(checkpoint.read_bytes())
    data[data.find(b"PK\x01\x02") + 46] = 0xFF  # the first entry's name in the central directory
    checkpoint.write_bytes(data)
    os.utime(checkpoint, (written.st_mtime + 3600,) * 2)
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps(results))
    assert zip_index_sha256(checkpoint) is None
    assert attacked_another(tmp_path / ATTACK_RESULTS, results, checkpoint)


# ---------------------------------------------------------------------------------------------
# Transfer attacks (attack.py --transfer_from)

def fixture_checkpoint(model, space, speech_run, path):
    """A best-model checkpoint of an in-process fixture model (`category`, `highdim`), with the
    config of `speech_run`'s (its data folder, seed 3): a run that classifies the tiny test set
    well, where the one epoch of `speech_run` barely does."""
    state = torch.load(speech_run[1] / "speech_seed3_resnet32_best_model.pth", weights_only=True)
    state |= {"model": model.state_dict(), "model_args": model.model_args, "label_space": space.state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture
def transfer_runs(category, highdim, speech_run, tmp_path):
    """(the category checkpoint, the highdim one, their folders' own attack_results.json: the
    highdim run's) of the fixtures' models, each in a folder of its own."""
    source = fixture_checkpoint(*category, speech_run,
                                tmp_path / "category" / "category_seed3_resnet32_best_model.pth")
    attacked = fixture_checkpoint(*highdim, speech_run,
                                  tmp_path / "highdim" / "speech_flat_seed3_resnet32_best_model.pth")
    return source, attacked, attacked.parent / ATTACK_RESULTS


def transfer_flags(attacked, source, cifar10_dir, label_dir, *extra):
    return ["--checkpoint", str(attacked), "--data_dir", str(cifar10_dir), "--label_dir", str(label_dir),
            "--device", "cpu", *([] if source is None else ["--transfer_from", str(source)]), *extra]


def test_one_shared_keeps_white_box_and_transfer_work_apart(category, highdim, test_set):
    """A white-box attack and a transfer attack of the same attacked model (a notebook's) passing
    one Shared, in either order, each give the result of a fresh call: the crafting network, the
    clean predictions and the clean-image gradients are each the right model's. (Before, the
    second call took the first's folded network and gradients: the transfer gave the white-box
    numbers, and the white-box attack after a transfer crafted against the source.)"""
    images, labels, targets = test_set
    white = (*highdim, images, labels)
    transfer = (*category, images, labels)
    judge = {"judge": highdim}
    for chosen in (None, targets):
        kwargs = dict(targets=chosen, batch_size=16, keep_images=True)
        alone = {"white": run_attack(*white, "fgsm", EPS8, **kwargs),
                 "transfer": run_attack(*transfer, "fgsm", EPS8, **judge, **kwargs)}
        assert alone["white"]["robust_acc"] < alone["transfer"]["robust_acc"]
        for order in (("white", "transfer"), ("transfer", "white")):
            shared = Shared()
            for kind in order:
                result = (run_attack(*white, "fgsm", EPS8, shared=shared, **kwargs) if kind == "white" else
                          run_attack(*transfer, "fgsm", EPS8, shared=shared, **judge, **kwargs))
                assert result["robust_acc"] == alone[kind]["robust_acc"], (order, kind)
                assert torch.equal(result["adversarial"], alone[kind]["adversarial"]), (order, kind)


@pytest.mark.parametrize("targeted, judge", [(False, "highdim"), (True, "highdim"), (False, "speech")])
def test_a_transfer_is_the_attacked_models_reading_of_the_sources_adversarial_images(
        targeted, judge, transfer_runs, speech_run, tiny, cifar10_dir, label_dir, tmp_path, capsys):
    """FGSM crafted by hand against the category model (one signed step of its own loss's gradient,
    towards the seeded target when targeted) on every test image, classified by the attacked model
    (the highdim one, or the barely trained speech run, which misclassifies most images clean):
    its robust accuracy (the images it got right clean, still right) and target success are the
    transfer's. An image the source misclassifies is attacked all the same (5 of 100 here: crafted
    on the others alone, untargeted robust accuracy was 80% for 75%)."""
    from utils.attacks import gradient_sign
    source, attacked, _ = transfer_runs
    if judge == "speech":
        (tmp_path / "speech").mkdir()
        attacked = copied_checkpoint(speech_run, tmp_path / "speech")
    mode = "targeted" if targeted else "untargeted"
    setting = ["--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "yes" if targeted else "no"]
    summary, err = call_main(capsys, transfer_flags(attacked, source, cifar10_dir, label_dir, *setting))
    assert unstamped(err.splitlines()[0]) == (f"attacking {attacked} with images crafted against {source}: 1 setting "
                                              "on 100 test images, batch 500, on cpu")
    crafter, crafter_space, _ = attack.model_from_checkpoint(source)
    model, space, _ = attack.model_from_checkpoint(attacked)
    images, labels = to_float(tiny.test_images), tiny.test_labels
    goal = draw_targets(labels, 10, 3) if targeted else labels  # the attacked run's seed
    step = (-1 if targeted else 1) * EPS8 * gradient_sign(crafter, crafter_space, images, goal)
    with torch.no_grad():
        clean = space.decode(model(images)) == labels
        adversarial = space.decode(model((images + step).clamp(0, 1)))
    robust = (clean & (adversarial == labels)).float().mean().item()
    # (a folded network's float rounding may flip a gradient sign, rarely a prediction)
    assert summary["robust_acc"] == {f"fgsm<category/{mode}/8/255": pytest.approx(robust, abs=0.011)}
    assert summary["clean_acc"] == clean.sum().item() / len(labels)
    if targeted:
        hits = (clean & (adversarial == goal)).sum().item() / clean.sum().item()
        assert summary["target_success"] == {f"fgsm<category/{mode}/8/255": pytest.approx(hits, abs=0.011)}
    if judge == "highdim":  # not the attacked model's own white-box numbers: its gradients were never used
        white, _ = call_main(capsys, transfer_flags(attacked, None, cifar10_dir, label_dir, *setting,
                                                    "--examples", "0"))
        assert white["robust_acc"][f"fgsm/{mode}/8/255"] < summary["robust_acc"][f"fgsm<category/{mode}/8/255"]
    else:
        assert 0 < summary["clean_acc"] < 0.8


def test_transfer_entries_record_their_source_and_are_reused_until_it_changes(transfer_runs, speech_run,
                                                                               cifar10_dir, label_dir, tmp_path,
                                                                               capsys):
    """Transfer entries go beside the white-box ones, named after their source and carrying its
    record; each kind is reused by its own reruns alone, and the transfer ones only while the source
    checkpoint holds the bytes they were crafted against."""
    source, attacked, results = transfer_runs
    pgd = ["--attacks", "pgd", "--epsilons", "8/255", "--steps", "2", "--targeted", "no", "--num_images", "20"]
    white, _ = call_main(capsys, transfer_flags(attacked, None, cifar10_dir, label_dir, *pgd, "--examples", "0"))
    transfer, err = call_main(capsys, transfer_flags(attacked, source, cifar10_dir, label_dir, *pgd))
    assert "(reused from" not in err and "[1/1] pgd<category untargeted eps 8/255: robust_acc" in err
    record = {"name": "category", "checkpoint": str(source), "label": "category", "model": "resnet32", "seed": 3,
              **attack.checkpoint_record(source.read_bytes(), os.stat(source))}  # its size, mtime, zip index too
    assert record["checkpoint_sha256"] == file_sha256(source)
    assert transfer["source"] == record and list(transfer["robust_acc"]) == ["pgd<category/untargeted/8/255"]
    assert transfer["clean_acc"] == white["clean_acc"]  # the attacked model's, on the same images
    entries = json.loads(results.read_text())["entries"]
    assert [e.get("source") for e in entries] == [None, record]
    assert entries[1]["robust_acc"] == transfer["robust_acc"]["pgd<category/untargeted/8/255"]
    assert not (attacked.parent / ATTACK_EXAMPLES).exists()  # the run's figure is of its white-box attacks
    # each rerun reuses its own kind; the file is not written again
    written = results.read_bytes()
    _, err = call_main(capsys, transfer_flags(attacked, source, cifar10_dir, label_dir, *pgd))
    assert err.count("(reused from") == 1
    assert call_main(capsys, transfer_flags(attacked, None, cifar10_dir, label_dir, *pgd, "--examples", "0")
                     )[0] == white
    assert results.read_bytes() == written
    # another source checkpoint of the same name: entries of its own, beside
    other = tmp_path / "other" / source.name
    state = torch.load(source, weights_only=True)
    state["config"]["flags"]["seed"] = 4
    other.parent.mkdir()
    torch.save(state, other)
    again, err = call_main(capsys, transfer_flags(attacked, other, cifar10_dir, label_dir, *pgd))
    assert "(reused from" not in err and again["source"]["seed"] == 4
    assert len(json.loads(results.read_text())["entries"]) == 3
    # the source trained again at its path: its entries are dropped, and computed against it anew
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, source)
    again, err = call_main(capsys, transfer_flags(attacked, source, cifar10_dir, label_dir, *pgd))
    assert (f"{results}: dropping 1 transfer entry crafted against an earlier {source} (written again "
            "since)") in err
    assert "(reused from" not in err
    entries = json.loads(results.read_text())["entries"]
    assert [e.get("source", {}).get("checkpoint_sha256") for e in entries] == [
        None, file_sha256(other), file_sha256(source)]
    # a source of another network is named after it too
    vgg = fixture_checkpoint(build_model("vgg19", (10,)), CategorySpace(10), speech_run,
                             tmp_path / "vgg" / "category_seed3_vgg19_best_model.pth")
    summary, _ = call_main(capsys, transfer_flags(attacked, vgg, cifar10_dir, label_dir, "--attacks", "fgsm",
                                                  "--epsilons", "8/255", "--targeted", "no", "--num_images", "5"))
    assert list(summary["robust_acc"]) == ["fgsm<vgg19:category/untargeted/8/255"]
    assert summary["source"]["model"] == "vgg19"


def test_entries_count_each_classs_robust_images_and_older_ones_are_reused_without(
        transfer_runs, tiny, cifar10_dir, label_dir, capsys):
    """Each entry attack.py computes holds run_attack's per-class counts (class_images, class_robust),
    a transfer's the attacked run's reading of the images crafted against its source, and the file
    the class names they index. An entry of an attack.py before them (without) is reused as it is,
    not computed again, and the file not written."""
    source, attacked, results = transfer_runs
    fgsm = ["--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no", "--num_images", "60"]
    call_main(capsys, transfer_flags(attacked, None, cifar10_dir, label_dir, *fgsm, "--examples", "0"))
    call_main(capsys, transfer_flags(attacked, source, cifar10_dir, label_dir, *fgsm))
    saved = json.loads(results.read_text())
    assert saved["classes"] == tiny.class_names
    model, space, _ = attack.model_from_checkpoint(attacked)
    crafter, crafter_space, _ = attack.model_from_checkpoint(source)
    images, labels = tiny.test_images[:60], tiny.test_labels[:60]
    for entry, (crafted, judge) in zip(saved["entries"], (((model, space), None), ((crafter, crafter_space),
                                                                                   (model, space)))):
        expected = run_attack(*crafted, images, labels, "fgsm", EPS8, seed=3, judge=judge)
        assert (entry["class_images"], entry["class_robust"]) == (expected["class_images"], expected["class_robust"])
        assert sum(entry["class_robust"]) == round(entry["robust_acc"] * 60) > 0
    white, transfer = saved["entries"]
    assert white["class_robust"] != transfer["class_robust"]  # the transfer's are not the white-box counts
    for entry in saved["entries"]:  # as an older attack.py wrote them
        del entry["class_images"], entry["class_robust"]
    results.write_text(json.dumps(saved))
    written = results.read_bytes()
    for crafted, extra in ((None, ["--examples", "0"]), (source, [])):
        _, err = call_main(capsys, transfer_flags(attacked, crafted, cifar10_dir, label_dir, *fgsm, *extra))
        assert err.count("(reused from") == 1
    assert results.read_bytes() == written


def test_transfer_errors_are_one_line(transfer_runs, speech_run, cifar10_dir, label_dir, tmp_path, capsys):
    source, attacked, results = transfer_runs
    flags = ["--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no", "--num_images", "5"]

    def refused(given, *extra):
        return one_line_error(capsys, transfer_flags(attacked, given, cifar10_dir, label_dir, *flags, *extra))
    assert refused(tmp_path / "nosuch.pth") == f"error: --transfer_from {tmp_path / 'nosuch.pth'} does not exist"
    assert refused(source.parent) == (f"error: --transfer_from {source.parent} is a folder, not a checkpoint "
                                      f"file; pass --transfer_from {source}")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    line = refused(tmp_path / "broken.pth")
    assert "is corrupt" in line and line.endswith("point --transfer_from at a best checkpoint train.py wrote")
    same = tmp_path / "same" / attacked.name  # a copy: the same bytes, so the white-box attack
    same.parent.mkdir()
    shutil.copy(attacked, same)
    assert refused(same) == (f"error: --transfer_from {same} is the attacked checkpoint itself (the same bytes), "
                             "whose attacks are the white-box ones: leave out --transfer_from, or pass another "
                             "run's checkpoint")
    state = torch.load(source, weights_only=True)
    state["config"]["flags"] |= {"dataset": "cifar100", "label_granularity": "coarse"}
    torch.save(state, tmp_path / "coarse.pth")
    assert refused(tmp_path / "coarse.pth") == (
        f"error: --transfer_from {tmp_path / 'coarse.pth'} was trained on cifar100_coarse, but the attacked run "
        "on cifar10; a transfer attack's source must be of the same dataset and classes")
    twenty = build_model("resnet32", (20,))
    fixture_checkpoint(twenty, CategorySpace(20), speech_run, tmp_path / "twenty.pth")
    assert refused(tmp_path / "twenty.pth") == (f"error: {tmp_path / 'twenty.pth'} predicts 20 classes, but "
                                                "cifar10 (fine) has 10")
    assert refused(source, "--examples", "2") == (
        "error: --transfer_from draws no attack_examples.png (the run's figure shows its white-box attacks); "
        "leave out --examples 2")
    state = torch.load(source, weights_only=True)
    state["model_args"]["mean"] = [0.5, 0.5, 0.5]
    torch.save(state, tmp_path / "mean.pth")
    assert refused(tmp_path / "mean.pth", "--paper_protocol", "--epsilons", "0.1") == (
        f"error: --transfer_from {tmp_path / 'mean.pth'} normalises its images by another mean and std than the "
        "attacked run, so --paper_protocol's eps, in normalised units, would be other budgets for the two; "
        "leave out --paper_protocol (pixel units)")
    # a network whose outputs are not its targets' shape: a traceback from the loss, the run locked
    state = torch.load(source, weights_only=True)
    state["label_space"] = torch.load(attacked, weights_only=True)["label_space"]
    torch.save(state, tmp_path / "shape.pth")
    assert refused(tmp_path / "shape.pth") == (f"error: {tmp_path / 'shape.pth'}: the model outputs (10,) but its "
                                               "speech_flat targets have shape (4096,)")
    # of train.py's run: its last checkpoint (another epoch's weights, named as the run all the same),
    # or the best one of a run still training (which may change)
    run = speech_run[1]
    best = run / "speech_seed3_resnet32_best_model.pth"
    assert refused(run / "last_checkpoint.pth") == (
        f"error: --transfer_from {run / 'last_checkpoint.pth'} is the last checkpoint of train.py's run in {run} "
        f"(its last epoch's weights), not the run's best; pass --transfer_from {best}")
    training = tmp_path / "training"
    training.mkdir()
    shutil.copy(run / "config.json", training)
    shutil.copy(best, training)
    assert refused(training / best.name) == (
        f"error: --transfer_from {training / best.name}: {training} has not finished training (it has config.json "
        "but no results.json), so its best checkpoint may still change; finish it with train.py --resume first")
    assert not results.exists()  # bad input ends before anything is written
    # the paper's protocol itself transfers: its eps in the (shared) normalised units, its clamps
    summary, _ = call_main(capsys, transfer_flags(attacked, source, cifar10_dir, label_dir, "--paper_protocol",
                                                  "--epsilons", "0.1", "--targeted", "no", "--num_images", "5"))
    assert list(summary["robust_acc"]) == ["fgsm<category/untargeted/0.1", "iterative<category/untargeted/0.1"]
