"""The CAM family: Grad-CAM and its relatives, each a formula on a stage's output and its gradient.

Every method here reads the analysis's stored pass: the stage output A (1, C, h, w)
and, for the gradient methods, G = d score / d A from the shared, cached backward of
:mod:`.gradcam` (none at all at ``layer4``). A method is then only its formula, as in
pytorch-grad-cam (``get_cam_weights`` / ``get_cam_image``), whose results the test
suite matches. Each formula returns a (1, 1, h, w) map, its positive part only (ReLU), as
every one of these papers does; the weighted sum and ReLU, Grad-CAM itself, and the
finishing of every map (:func:`~resnet_demo.explain.gradcam.finish_layer_map`) are
:mod:`resnet_demo.core.cam`'s, which the Transfer tab's Grad-CAM uses too.

* Grad-CAM (Selvaraju et al., 2017): channel weights = the spatial mean of G.
* Grad-CAM++ (Chattopadhay et al., 2018): weights = sum_ij ReLU(G) a_ij, with
  a_ij = G^2 / (2 G^2 + sum_ij(A) G^3) (their eq. 19; higher derivatives of exp(score)).
* XGradCAM (Fu et al., 2020): weights = sum_ij(G A) / sum_ij(A).
* LayerCAM (Jiang et al., 2021): no channel weights; ReLU(G) A summed over channels.
* HiResCAM (Draelos and Carin, 2020): G A summed over channels, position by position.
* Grad-CAM element-wise (pytorch-grad-cam): ReLU(G A) summed over channels.
* Eigen-CAM (Muhammad and Yeasin, 2020): the first principal component of A, no gradient, no class.
* CAM (Zhou et al., 2016), ``layer4`` only: sum_k w_ck A_k with the ``fc`` weights
  (w_A - w_B for a contrastive map).

Two coincidences on a ResNet, worth knowing when comparing maps: every stage output is
post-ReLU (A >= 0), so ReLU(G) A = ReLU(G A) and LayerCAM equals Grad-CAM element-wise;
and at ``layer4`` G is the same at every position, so Grad-CAM, XGrad-CAM and HiResCAM
all equal CAM / (H W) there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.cam import gradcam, weighted_cam
from .gradcam import finish_layer_map
from .methods import Method, MethodCall, register

__all__ = ["CAM_FORMULAS", "eigen_projection"]

# Forward passes per map of a gradient method, by stage: how deep the shared backward goes
# (see Method.cost). Measured with `python -m resnet_demo bench --methods`. Once a backward
# has run, other methods and later stages of the same class are arithmetic only (~0.01).
_BACKWARD_COST = {"layer4": 0.02, "layer3": 0.6, "layer2": 1.25, "layer1": 1.6, "stem": 1.8}
# Eigen-CAM: the first principal component of the (h w, C) activations, no backward (measured).
_EIGEN_COST = {"layer4": 0.03, "layer3": 0.08, "layer2": 0.07, "layer1": 0.15, "stem": 0.05}
# Grad-CAM++'s and XGradCAM's guards against 0 / 0, pytorch-grad-cam's values (a different
# epsilon changes Grad-CAM++'s map where the gradients are tiny).
_EPS_PLUSPLUS = 1e-6
_EPS_XGRAD = 1e-7

# Eigen-CAM's first direction: a full eigh up to this size, block power iteration above it.
_EIGH_SIZE = 128
_RITZ_VECTORS = 8
_RITZ_ITERATIONS = 100
_RITZ_TOLERANCE = 1e-12  # 1 - |cos| between successive estimates: the direction to ~1e-6

# (1, C, h, w) activation, (1, C, h, w) gradient -> (1, 1, h, w) map, after the ReLU.
CamFormula = Callable[[Tensor, Tensor], Tensor]


def _gradcam(act: Tensor, grad: Tensor) -> Tensor:
    return gradcam(activations=act, gradients=grad)


def _gradcam_plusplus(act: Tensor, grad: Tensor) -> Tensor:
    # ReLU(G) G^2 / (G^2 (2 + sum_ij(A) G) + eps), summed over positions: eq. 19 times ReLU(G)
    # rearranged (pytorch-grad-cam's zeroing of a_ij where G = 0 is implied by ReLU(G) = 0 there),
    # in place: at layer1 every pass over the (1, 256, 56, 56) tensors costs about a millisecond.
    g2 = grad.square()
    denominator = (grad * act.sum(dim=(2, 3), keepdim=True)).add_(2.0).mul_(g2).add_(_EPS_PLUSPLUS)
    weights = grad.clamp(min=0).mul_(g2).div_(denominator).sum(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    return weighted_cam(weights=weights, activations=act)


def _xgradcam(act: Tensor, grad: Tensor) -> Tensor:
    sum_act = act.sum(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    weights = (grad * act).sum(dim=(2, 3), keepdim=True) / (sum_act + _EPS_XGRAD)
    return weighted_cam(weights=weights, activations=act)


def _layercam(act: Tensor, grad: Tensor) -> Tensor:
    return weighted_cam(weights=grad.clamp(min=0), activations=act)  # a weight per channel and position


def _hirescam(act: Tensor, grad: Tensor) -> Tensor:
    return weighted_cam(weights=grad, activations=act)


def _gradcam_elementwise(act: Tensor, grad: Tensor) -> Tensor:
    # The ReLU comes before the channel sum here, on each product: the sum is >= 0 already.
    return (grad * act).clamp(min=0).sum(dim=1, keepdim=True)


def _cam(act: Tensor, grad: Tensor) -> Tensor:
    # At layer4 the gradient is w_c / (H W) at every position (see .gradcam), so its
    # spatial sum is exactly CAM's class weights w_c (w_A - w_B for a contrastive map).
    return weighted_cam(weights=grad.sum(dim=(2, 3), keepdim=True), activations=act)


def _first_direction(x: Tensor) -> Tensor:
    """The first right singular vector of a centred (n, C) matrix: unit, (C,) float64, sign arbitrary.

    Small cases take the top eigenvector of the smaller Gram matrix (X^T X, or X X^T
    mapped back through X^T). Above that, a full ``eigh`` costs O(m^3), tens of
    milliseconds on a CPU, so block power iteration on X itself (8 vectors from a fixed
    start: the result never varies) with a Rayleigh-Ritz step finds the same vector,
    to ~1e-6, in a few passes over X.
    """
    n, c = x.shape
    if min(n, c) <= _EIGH_SIZE:
        if c <= n:
            return torch.linalg.eigh((x.T @ x).double()).eigenvectors[:, -1]
        v = x.T.double() @ torch.linalg.eigh((x @ x.T).double()).eigenvectors[:, -1]
        return v / v.norm().clamp(min=1e-30)
    start = torch.Generator(device="cpu").manual_seed(0)
    basis = torch.randn(c, _RITZ_VECTORS, generator=start).to(x)  # (C, k)
    top = torch.zeros(c, dtype=torch.float64, device=x.device)
    for _ in range(_RITZ_ITERATIONS):
        basis, _ = torch.linalg.qr(basis)
        z = (x @ basis).double()  # (n, k): the Ritz step works on X basis, never on the (C, C) Gram
        ritz = torch.linalg.eigh(z.T @ z).eigenvectors[:, -1]  # (k,)
        previous, top = top, basis.double() @ ritz
        if 1.0 - abs(float(previous @ top)) < _RITZ_TOLERANCE:
            break
        basis = x.T @ z.to(x.dtype)  # (C, k): one power step, X^T X basis
    return top


def eigen_projection(act: Tensor) -> Tensor:
    """Eigen-CAM: the (1, C, h, w) activations projected on their first principal component. (1, 1, h, w)

    The positions are the samples and the channels the features: the activations are
    centred per channel and projected on the first right singular vector, as
    pytorch-grad-cam's ``get_2d_projection`` does (with a full SVD; see
    :func:`_first_direction` for the same vector, faster). A singular vector's sign is
    arbitrary (-u, -v is as good a pair as u, v), and the ReLU that follows would keep
    opposite halves of the image for the two signs, so the sign is fixed deliberately:
    the projection correlates positively with the channel-summed activation, i.e. the
    map is high where the stage responds strongly. No gradient, so no class, enters.
    """
    _, c, h, w = act.shape
    x = act[0].reshape(c, h * w).T.float()  # (h w, C): positions are the samples
    x = x - x.mean(dim=0, keepdim=True)
    projection = x.double() @ _first_direction(x)  # (h w,), centred because x is
    if float(projection @ act[0].sum(dim=0).reshape(-1).double()) < 0:
        projection = -projection
    return projection.to(act.dtype).reshape(1, 1, h, w)


def _family_member(formula: CamFormula) -> Callable[[MethodCall], dict[str, Tensor]]:
    """A registry ``compute`` that applies ``formula`` at every stage asked for."""

    def compute(call: MethodCall) -> dict[str, Tensor]:
        grads = call.stage_gradients(call.stages)  # one shared, cached backward (none at layer4)
        with torch.no_grad():
            return {s: formula(call.activations[s], grads[s]) for s in call.stages}

    return compute


def _eigencam(call: MethodCall) -> dict[str, Tensor]:
    return {s: torch.relu(eigen_projection(call.activations[s])) for s in call.stages}


# name -> (label, formula): the gradient methods, in menu order.
CAM_FORMULAS: dict[str, tuple[str, CamFormula]] = {
    "gradcam": ("Grad-CAM", _gradcam),
    "gradcam++": ("Grad-CAM++", _gradcam_plusplus),
    "xgradcam": ("XGrad-CAM", _xgradcam),
    "layercam": ("LayerCAM", _layercam),
    "hirescam": ("HiResCAM", _hirescam),
    "gradcam-elementwise": ("Grad-CAM element-wise", _gradcam_elementwise),
}

for _name, (_label, _formula) in CAM_FORMULAS.items():
    register(
        Method(
            name=_name,
            label=_label,
            space="layer",
            cost=lambda stage, options: _BACKWARD_COST[stage],
            compute=_family_member(_formula),
            finish=finish_layer_map,
            cheap=True,
        )
    )
register(
    Method(
        name="eigencam",
        label="Eigen-CAM",
        space="layer",
        cost=lambda stage, options: _EIGEN_COST[stage],
        compute=_eigencam,
        finish=finish_layer_map,
        cheap=True,
        class_specific=False,
    )
)
register(
    Method(
        name="cam",
        label="CAM",
        space="layer",
        cost=lambda stage, options: _BACKWARD_COST["layer4"],
        compute=_family_member(_cam),
        finish=finish_layer_map,
        cheap=True,
        stages=("layer4",),
    )
)
