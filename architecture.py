"""The paper's networks: a trunk from a registry plus a head that follows from the target's shape.

    model = build_model("resnet32", output_shape=(64, 64))   # speech labels: a deconvolution decoder
    model = build_model("vgg19", output_shape=(10,))          # category logits (or any vector target)
    outputs = model(images)   # images (N, 3, 32, 32) float in [0, 1] -> outputs (N, *output_shape)

The trunks are the CIFAR VGG19-BN and ResNets (BasicBlocks, 16-32-64 channels, 1x1-convolution
shortcuts) of the paper's code base, so parameter counts equal the paper's. Normalisation is the
model's first layer: every caller, attacks included, works with images in [0, 1].
"""
import contextlib
import math
import threading
from functools import partial

import torch
import torch.nn as nn

from utils.constants import PAPER_MEAN, PAPER_STD
from utils.errors import choice


def _init_conv_bn(module):
    # The paper's code base initialises convolutions with N(0, 2 / (k*k*out_channels)) and
    # batch norms to identity; heads keep PyTorch's defaults.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2: features (N, 64) from images (N, 3, 32, 32)."""

    def __init__(self, depth):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        in_channels = 16
        for channels, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(in_channels, channels, stride if i == 0 else 1))
                in_channels = channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)
        self.out_features = in_channels
        _init_conv_bn(self)

    def forward(self, x):
        return self.layers(x)


VGG19_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                  512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with batch norm: features (N, 512) from images (N, 3, 32, 32) after five poolings."""

    def __init__(self, channels=VGG19_CHANNELS):
        super().__init__()
        if list(channels).count("M") != 5:  # else a shape mismatch deep in the head's first matmul
            raise ValueError(f"a VGG on 32x32 images pools five times to 1x1 before its features: its "
                             f"channels hold {list(channels).count('M')} 'M' entries, not 5")
        layers, in_channels = [], 3
        for c in channels:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                in_channels = c
        layers.append(nn.Flatten())
        self.layers = nn.Sequential(*layers)
        self.out_features = in_channels
        _init_conv_bn(self)

    def forward(self, x):
        return self.layers(x)


ARCHITECTURES = {
    "vgg19": partial(VGG, channels=VGG19_CHANNELS),
    "resnet32": partial(ResNet, depth=32),
    "resnet110": partial(ResNet, depth=110),
}


def get_trunk(name):
    return ARCHITECTURES[choice("model", name, ARCHITECTURES)]()


class DecoderHead(nn.Module):
    """The paper's decoder for 2-D targets: features -> 64-d code -> transposed convolutions.

    Four stride-2 layers multiply the first layer's kernel size by 16, so the first kernel is
    ceil(H/16) x ceil(W/16) (4 for the 64x64 speech labels, 3 for the 48x48 BERT labels) and
    outputs larger than (H, W) are cropped.
    """
    CODE = 64

    def __init__(self, in_features, shape):
        super().__init__()
        self.shape = tuple(shape)
        first_kernel = tuple(math.ceil(s / 16) for s in self.shape)
        self.project = nn.Sequential(nn.BatchNorm1d(in_features), nn.LeakyReLU(),
                                     nn.Linear(in_features, self.CODE))
        layers, channels = [nn.ConvTranspose2d(self.CODE, 64, first_kernel, 1, 0)], 64
        for out_channels in (32, 16, 8, 1):
            layers += [nn.BatchNorm2d(channels), nn.LeakyReLU(),
                       nn.ConvTranspose2d(channels, out_channels, 4, 2, 1)]
            channels = out_channels
        self.deconvs = nn.Sequential(*layers)

    def forward(self, features):
        code = self.project(features)[:, :, None, None]
        out = self.deconvs(code)[:, 0]
        return out[:, :self.shape[0], :self.shape[1]]


class LinearHead(nn.Module):
    """Category logits, a vector target, or any other shape: one linear layer, then reshape."""

    def __init__(self, in_features, shape):
        super().__init__()
        self.shape = tuple(shape)
        self.linear = nn.Linear(in_features, math.prod(self.shape))

    def forward(self, features):
        return self.linear(features).view(-1, *self.shape)


def make_head(in_features, output_shape):
    """The head for outputs of `output_shape` (one target's shape, without the class axis)."""
    if len(output_shape) == 2:
        return DecoderHead(in_features, output_shape)
    return LinearHead(in_features, output_shape)


def _normalisation(name, values):
    """`values` as 3 plain floats (numpy's, or 0-d tensors, in model_args would not load with
    weights_only=True); a ValueError unless finite, and for the std above 0 (a checkpoint's model_args
    rebuild its model: a zero std there would make every output NaN)."""
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        floats = []
    if len(floats) != 3 or not all(map(math.isfinite, floats)) or name == "std" and min(floats) <= 0:
        raise ValueError(f"normalisation {name} {floats or values} is not 3 finite numbers"
                         + (", each above 0" if name == "std" else ""))
    return floats


class LabelModel(nn.Module):
    """normalise -> trunk -> head. images: (N, 3, 32, 32) float in [0, 1], of any float dtype:
    they are computed in the model's (an attack's float32 images through a model.bfloat16())."""

    def __init__(self, arch, output_shape, mean, std):
        super().__init__()
        mean, std = _normalisation("mean", mean), _normalisation("std", std)
        self.model_args = {"arch": arch, "output_shape": list(output_shape),
                           "mean": list(mean), "std": list(std)}
        # Not persistent: they come from model_args, so a checkpoint holds learned state only.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.trunk = get_trunk(arch)
        self.head = make_head(self.trunk.out_features, output_shape)

    def features(self, images):
        return self.trunk((images.to(self.mean.dtype) - self.mean) / self.std)

    def forward(self, images):
        return self.head(self.features(images))


# torch's CPU generator is the process's: seeded builds in threads of one process (a notebook's
# runs) take turns, where each drew its initial weights from the other's seed
_SEEDED_BUILD = threading.Lock()


def build_model(arch, output_shape, mean=PAPER_MEAN, std=PAPER_STD, seed=None):
    """`LabelModel`, its initial weights drawn from torch's RNG, or with `seed` from that seed alone
    (torch's CPU generator, where the model is built), the caller's RNG left as it was: one such
    build at a time in the process (a draw of torch's RNG in another thread meanwhile, not one of
    these, still takes from the seed's)."""
    if seed is None:
        return LabelModel(arch, tuple(output_shape), tuple(mean), tuple(std))
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build_model(arch, output_shape, mean, std)


def fold_batch_norm(model):
    """An inference copy of `model` (in eval mode) in which every batch norm that directly follows
    a convolution is folded into it: in eval mode y = gamma * (conv(x) - mu) / sqrt(var + eps) + beta
    is itself one convolution. The decoder's batch norms, which follow transposed convolutions,
    stay. Same outputs up to float rounding; the forward and input-gradient passes of attacks are
    about 1.3x faster on a CPU (a trained resnet32, 2 threads) and the batch norms' memory passes
    are gone on a GPU too. The copy's graph is traced by torch.fx; the original model is left as
    it was, each module in the mode it was in (`eval_mode`). A trunk that torch.fx cannot trace
    (Python control flow on a tensor or its shape) is left unfolded: the copy is then a plain one,
    in eval mode."""
    import copy
    from torch.fx.experimental.optimization import fuse
    with eval_mode(model):
        try:
            traced = torch.fx.symbolic_trace(model)
        except Exception:  # TraceError, TypeError, ...: what it cannot follow runs eagerly all the same
            traced = None
        return (copy.deepcopy(model) if traced is None else fuse(traced, no_trace=True)).eval()


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode within the block; after it, however it ends, each of its modules in the
    mode it was in: a caller's model in training stays so, with the batch norms it froze (a
    fine-tuning's fixed statistics) frozen, where model.train() would set them training too."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def placement(model):
    """(device, dtype) of `model`'s parameters: where and in what its inputs are computed."""
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype
