"""The explanation engine: predictions, explanation maps (the CAM family at any stage and
class, contrastive and fused, and the other methods of the registry), feature maps and
per-block statistics of one image, from one forward pass.

:func:`analyze` runs the network once and returns an :class:`Analysis` that holds what
that pass computed: the top-k predictions, the output of every stage and the statistics
of every bottleneck block. Everything else is derived from it on request.

Where each part lives:

* :mod:`.results`: the records returned (:class:`Prediction`, :class:`BlockStat`,
  :class:`FeatureGrid`, :class:`Attribution`, :class:`Prepared`);
* :mod:`.inputs`: loading and preprocessing an image (:func:`prepare`);
* :mod:`.network`: the cached folded inference copy of a model and its inference pass;
* :mod:`.analyze`: :func:`analyze`, :func:`predict` and the block statistics;
* :mod:`.analysis`: :class:`Analysis`, feature maps and cached explanation maps;
* :mod:`.methods`: the method registry (:class:`Method`, :func:`register`, :data:`METHODS`);
* :mod:`.gradcam`: the class-score gradients at every stage from one cached backward (none at layer4);
* :mod:`.cams`: the CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM,
  Grad-CAM element-wise, Eigen-CAM, CAM), each a formula on a stage's output and its gradient
  (Grad-CAM itself, the weighted sum + ReLU and the finishing of every map are
  :mod:`resnet_demo.core.cam`'s, shared with the transfer engine);
* :mod:`.score_cams`: Score-CAM and Ablation-CAM, batched forwards from the stored pass;
* :mod:`.captum_methods`: Guided Grad-CAM, Integrated Gradients (+ NoiseTunnel), Occlusion;
* :mod:`.lrp` (+ :mod:`.lrp_rules`): layer-wise relevance propagation (ε-z⁺-flat) through the residual sums, with
  where the relevance went (conservation); :mod:`.crp`: the channels of a stage carrying it (concepts);
* :mod:`.smoothgrad`: SmoothGrad; :mod:`.rise`: RISE (random masks); :mod:`.dff`: Deep Feature
  Factorization (a stage's activations as k concepts, drawn in colours);
* :mod:`.cost`: :func:`method_cost`, the expected seconds of a map on this machine, and :func:`check_budget`, which refuses work over a time limit;
* :mod:`.classes`: :func:`find_class` and :func:`resolve_class`;
* :mod:`.faithfulness` (deletion and insertion curves, the ranking of the cheap methods),
  :mod:`.baselines` (what a removed pixel shows) and :mod:`.sanity` (the randomisation
  check): how far a map can be trusted; :mod:`.metric_cards` (every metric's card and the one
  entry point that computes them) with the metrics in :mod:`.road`, :mod:`.confidence`,
  :mod:`.map_statistics`, :mod:`.sensitivity` and :mod:`.pointing`, and :mod:`.reliability`
  (how consistently each metric ranks the methods across photos); :mod:`.plots`: their figures (plotly);
* :mod:`.evaluate_cli`: the ``python -m resnet_demo evaluate`` command;
* :mod:`.cli`: the ``python -m resnet_demo explain`` command.

Nothing is ever hooked or changed on a shared model, so an :class:`Analysis` may be
kept per user and used from several threads.
"""

# Importing these registers the built-in methods; menus list methods in the order registered:
# the cheap CAM family first, then the methods that cost tens of forward passes or more.
from . import cams  # noqa: F401  (first)

# isort: split
from . import score_cams  # noqa: F401

# isort: split
from . import captum_methods  # noqa: F401

# isort: split
from . import lrp, rise, smoothgrad  # noqa: F401  ("which pixels": relevance, gradients, perturbations)

# isort: split
from . import crp, dff  # noqa: F401  ("what": concepts)

# isort: split
from .analysis import Analysis, overlay_on_full
from .analyze import analyze, predict
from .captum_methods import IG_STEPS
from .classes import find_class, resolve_class
from .cost import check_budget, method_cost
from .inputs import prepare
from .methods import (
    METHODS,
    QUESTIONS,
    REGISTRY,
    Method,
    MethodCall,
    cheap_methods,
    get_method,
    grouped_methods,
    quick_methods,
    register,
    unregister,
)
from .network import inference_model
from .results import Attribution, BlockStat, FeatureGrid, Prediction, Prepared

__all__ = [
    "IG_STEPS",
    "METHODS",
    "QUESTIONS",
    "REGISTRY",
    "Analysis",
    "Attribution",
    "BlockStat",
    "FeatureGrid",
    "Method",
    "MethodCall",
    "Prediction",
    "Prepared",
    "analyze",
    "cheap_methods",
    "find_class",
    "get_method",
    "grouped_methods",
    "quick_methods",
    "inference_model",
    "check_budget",
    "method_cost",
    "overlay_on_full",
    "predict",
    "prepare",
    "register",
    "resolve_class",
    "unregister",
]
