"""Maximal coding rate reduction (Yu, Chan, You, Song, Ma, NeurIPS 2020) as a label space.

    python train.py --label mcr2 --feature_dim 128 --mcr2_eps 0.5     # batch 1000, lr 0.01 by default

Instead of regressing a fixed target per class, the network maps images to L2-normalised features
Z (m x d) trained to maximise the rate reduction  R(Z) - Rc(Z | Pi):

    R(Z)      = 1/2 logdet(I + gam1 d / (m eps^2) Z^T Z)
    Rc(Z|Pi)  = sum_j tr(Pi_j) / (2m) logdet(I + d / (tr(Pi_j) eps^2) Z^T Pi_j Z)

(loss = -gam2 R + Rc; `eps2` is eps^2). Classes are decoded by the nearest subspace: the top
principal directions of each class's training features, fitted after every epoch on the current
model and stored in the checkpoint. Attacks use a differentiable surrogate of that decision:
cross-entropy over the squared norms of the projections onto each class subspace.
"""
import torch
import torch.nn.functional as F

from utils.constants import check_components, check_rate_scale
from utils.errors import UsageError
from utils.labelspace import at_least_float32, full_precision

MCR2 = "mcr2"


def rate(gram, count, eps2, scale=1.0):
    """1/2 logdet(I + scale d / (count eps2) G) for the Gram matrix G = Z^T Z (d, d) of `count`
    features, or for a stack of them (C, d, d) with counts (C,); a count of 0 (G = 0) gives 0."""
    d = gram.shape[-1]
    count = torch.as_tensor(count, dtype=gram.dtype, device=gram.device).clamp_min(1)
    eye = torch.eye(d, dtype=gram.dtype, device=gram.device)
    return 0.5 * torch.logdet(eye + (scale * d / eps2) * gram / count[..., None, None])


def rate_reduction_loss(features, labels, num_classes, eps2=0.5, gam1=1.0, gam2=1.0):
    """-gam2 R(Z) + Rc(Z | Pi) for features (m, d) (normalised here) and labels (m,); float32+.

    Every class's term is computed from the same shapes whatever the batch holds (Z^T Pi_j Z with
    Pi_j the class's 0/1 diagonal), so `--compile` makes one graph for it: cutting out each class's
    rows gave a new shape, and a recompile, for every class size a batch happened to have.
    """
    z = F.normalize(at_least_float32(features), dim=1)
    with full_precision(z):  # Gram matrices and logdet in float32+
        members = F.one_hot(labels, num_classes).to(z.dtype).T  # Pi: (C, m), diagonals as rows
        counts = members.sum(1)  # tr(Pi_j)
        grams = torch.einsum("cm,md,me->cde", members, z, z)  # Z^T Pi_j Z
        compress = (counts / len(z) * rate(grams, counts, eps2)).sum()
        return -gam2 * rate(z.T @ z, len(z), eps2, scale=gam1) + compress


def fit_subspaces(features, labels, num_classes, n_components=30):
    """Per-class principal directions of normalised features: (C, d, k), zero-padded columns
    where a class has fewer than k samples (zero columns project nothing)."""
    z = F.normalize(at_least_float32(features), dim=1)
    d = z.shape[1]
    k = min(n_components, d)
    bases = z.new_zeros(num_classes, d, k)
    for j in range(num_classes):
        members = z[labels == j]
        if len(members):
            # right singular vectors of the class's (uncentred) feature matrix
            _, _, vh = torch.linalg.svd(members, full_matrices=False)
            r = min(k, len(members))
            bases[j, :, :r] = vh[:r].T
    return bases


def projection_norms(features, bases):
    """||U_j^T z||^2 for every class j: (N, C); larger means nearer to the class subspace."""
    z = F.normalize(at_least_float32(features), dim=1)
    with full_precision(z):
        return torch.einsum("nd,cdk->nck", z, bases.to(z.dtype)).square().sum(2)


class MCR2Space:
    """Label space of MCR2 models: outputs are (N, feature_dim) features."""
    needs_fit = True
    decoding = "nearest_subspace"

    def __init__(self, num_classes, feature_dim=128, eps2=0.5, gam1=1.0, gam2=1.0, n_components=30,
                 bases=None):
        """A new space (`bases` None) needs fewer components than feature dimensions: subspaces of
        every direction keep each feature whole, so every class would decode alike (by rounding);
        and a loss float32 can compute (`check_rate_scale`)."""
        if bases is None:
            check_components(n_components, feature_dim)
            check_rate_scale(feature_dim, eps2, gam1)
        self.name = MCR2
        self.num_classes = num_classes
        self.output_shape = (feature_dim,)
        self.eps2, self.gam1, self.gam2, self.n_components = eps2, gam1, gam2, n_components
        self.bases = torch.zeros(num_classes, feature_dim, min(n_components, feature_dim)) \
            if bases is None else torch.as_tensor(bases)

    def to(self, device):
        self.bases = self.bases.to(device)
        return self

    def loss(self, outputs, labels):
        """The batch's MCR2 loss spread over its images: (N,) whose mean is the batch loss."""
        batch_loss = rate_reduction_loss(outputs, labels, self.num_classes, self.eps2, self.gam1,
                                         self.gam2)
        return batch_loss.expand(len(labels))

    def adversarial_loss(self, outputs, labels):
        """Per-image cross-entropy over projection norms: the attacks' differentiable surrogate."""
        return F.cross_entropy(projection_norms(outputs, self.bases), labels, reduction="none")

    def fit(self, train_outputs, train_labels):
        if not torch.isfinite(train_outputs).all():  # the SVD fails on them, with a traceback
            raise UsageError("the MCR2 features are no longer finite: the run diverged; train it again "
                             "(--force) with a lower --lr")
        self.bases = fit_subspaces(train_outputs, train_labels, self.num_classes, self.n_components)

    def scores(self, outputs):
        """(N, C): the squared norm of the normalised feature's projection on each class subspace."""
        return projection_norms(outputs, self.bases)

    def decode(self, outputs):
        """Nearest subspace: the class whose subspace keeps most of the normalised feature."""
        return self.scores(outputs).argmax(1)

    def report(self, train_outputs, train_labels, outputs, labels, k=10):
        """Accuracy of the other two decoders: kNN (cosine, k neighbours) and nearest class mean."""
        train_z = F.normalize(at_least_float32(train_outputs), dim=1)
        z = F.normalize(at_least_float32(outputs), dim=1)
        similarity = z @ train_z.T
        neighbours = train_labels[similarity.topk(min(k, len(train_z)), dim=1).indices]
        votes = F.one_hot(neighbours, self.num_classes).sum(1)
        means = torch.stack([train_z[train_labels == j].mean(0) if (train_labels == j).any()
                             else train_z.new_zeros(train_z.shape[1]) for j in range(self.num_classes)])
        ncm = (z @ F.normalize(means, dim=1).T).argmax(1)
        # correct / n in Python floats, as evaluate() counts: 117 of 500 is 0.234, not float32's 0.23399999
        return {"knn_acc": (votes.argmax(1) == labels).sum().item() / len(labels),
                "ncm_acc": (ncm == labels).sum().item() / len(labels)}

    def state(self):
        return {"name": MCR2, "num_classes": self.num_classes, "feature_dim": self.output_shape[0],
                "eps2": self.eps2, "gam1": self.gam1, "gam2": self.gam2,
                "n_components": self.n_components, "bases": self.bases.cpu()}
