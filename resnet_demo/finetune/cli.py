"""``python -m resnet_demo finetune``: options, the config they make, and the run.

Every option defaults to None, so that with ``--resume`` each one not given is taken
from the checkpoint's config; the others take :class:`FinetuneConfig`'s defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..core.errors import UserError
from ..core.weights import ARCHES, read_pth
from ..data import make_sample_dataset
from .config import AMP_MODES, EXTRA_EVALS, FREEZE_MODES, OPTIMIZERS, FinetuneConfig
from .loop import finetune

__all__ = ["config_from_args", "configure_parser", "main"]

_DEFAULTS = FinetuneConfig()


def configure_parser(
    parser: argparse.ArgumentParser, *, defaults: FinetuneConfig | None = None, make_sample: bool = True
) -> None:
    """Add the ``finetune`` command's options; each defaults to None, meaning "not given".

    ``defaults`` are the values the help text names (another command's recipe, e.g. slim's);
    ``make_sample`` adds ``--make-sample``.
    """
    d = defaults or _DEFAULTS
    a = parser.add_argument
    a("--data", help="folder of class sub-folders (or train/ and val/), or a .zip of one")
    a("--out", help=f"output folder (default {d.out})")
    a("--arch", choices=ARCHES, help=f"architecture (default {d.arch})")
    a(
        "--weights",
        help=f"init weights: imagenet-v2, imagenet-v1, random or a .pth or .safetensors path (default {d.weights})",
    )
    a("--freeze", choices=FREEZE_MODES, help=f"what trains: head, layer4 (+ head) or none frozen (default {d.freeze})")
    a("--freeze-bn", type=_bool, metavar="BOOL", help="BatchNorm in eval mode (default: when batch < 8)")
    a("--epochs", type=int, help=f"default {d.epochs}")
    a("--batch-size", type=int, help=f"images per micro-batch per process (default {d.batch_size})")
    a("--accum-steps", type=int, help=f"micro-batches per optimizer step (default {d.accum_steps})")
    a("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer}")
    a("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    a("--momentum", type=float, help=f"SGD momentum (default {d.momentum})")
    a("--weight-decay", type=float, help=f"default {d.weight_decay}")
    a("--warmup-epochs", type=float, help=f"linear warmup length (default {d.warmup_epochs})")
    a("--min-lr-ratio", type=float, help=f"cosine floor as a fraction of --lr (default {d.min_lr_ratio})")
    a("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
    a("--clip-grad-norm", type=float, help=f"max gradient norm, 0 = off (default {d.clip_grad_norm})")
    a("--amp", choices=AMP_MODES, help="mixed precision (default auto: CUDA only)")
    a("--channels-last", type=_bool, metavar="BOOL", help=f"NHWC memory layout (default {d.channels_last})")
    a("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    a("--workers", type=int, help="data loading processes (default: CPUs per process - 1, at most 8)")
    a("--image-size", type=int, help=f"crop side (default {d.image_size})")
    a("--scale-min", type=int, help="short side range start for the random scale (default 256 at 224)")
    a("--scale-max", type=int, help="short side range end (default 480 at 224)")
    a("--random-resized-crop", type=_bool, metavar="BOOL", help="RandomResizedCrop instead of scale + crop")
    a("--color-jitter", type=float, help=f"default {d.color_jitter}")
    a("--eval-resize", type=int, help="short side before the eval center crop (default 256 at 224)")
    a("--extra-eval", choices=EXTRA_EVALS, help="also report this test at the end")
    a("--distill-from", metavar="ARCH|PTH", help="teacher: resnet152 (ImageNet) or a checkpoint of the same classes")
    a("--kd-temperature", type=float, help=f"distillation temperature T (default {d.kd_temperature:g})")
    a("--kd-alpha", type=float, help=f"weight of the teacher's soft targets, 0 to 1 (default {d.kd_alpha:g})")
    a("--val-fraction", type=float, help=f"held out per class without a val/ folder (default {d.val_fraction})")
    a("--seed", type=int, help=f"default {d.seed}")
    a("--resume", metavar="LAST_PTH", help="continue a run; options not given are taken from its checkpoint")
    a("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    if make_sample:
        a("--make-sample", metavar="DIR", help="write the generated sample set (coloured shapes) to DIR and exit")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def config_from_args(args: argparse.Namespace, *, cls: type[FinetuneConfig] = FinetuneConfig) -> FinetuneConfig:
    """``cls``'s defaults, or the resumed checkpoint's config, overridden by the flags given."""
    base = cls()
    if getattr(args, "resume", None):
        ckpt = read_pth(Path(args.resume))
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
            raise UserError(f"{Path(args.resume).name} is not a last.pth of this fine-tune routine.")
        base = cls.from_dict(ckpt["config"], name=Path(args.resume).name)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **given)


def main(args: argparse.Namespace) -> int:
    """Run the ``finetune`` command (or write the sample set); 130 when the run was cancelled."""
    if getattr(args, "make_sample", None):
        root = make_sample_dataset(args.make_sample, num_classes=3, images_per_class=40, image_size=160)
        print(f"wrote 3 classes x 40 images to {root}\nfine-tune on it: python -m resnet_demo finetune --data {root}")
        return 0
    cfg = config_from_args(args)
    result = finetune(cfg)
    if result.cancelled:
        return 130
    best = result.summary.get("best_val_top1")
    print(
        f"done: best val top-1 {best:.1f}% -> {result.best}\n"
        f"explain it: python -m resnet_demo explain IMAGE --arch {cfg.arch} --weights {result.best}"
    )
    return 0
