"""The fine-tune run itself: :func:`finetune` and the one object that carries a run
from its start (:mod:`.start`: model, optimizer, loss, fresh or resumed) through its
epochs to the summary.

Each optimizer step sets the learning rate, accumulates ``accum_steps`` micro-batches
(all-reduced once, under DDP), stops on a NaN or infinite loss, clips, and steps. Each
epoch ends with validation, ``last.pth``, ``best.pth`` when it improved, and a line in
``metrics.jsonl``; the run ends with ``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from ..core.devices import resolve_device
from ..core.errors import UserError
from ..core.process_group import Dist, distributed_run
from ..core.weights import read_pth
from ..data import ImageListDataset, eval_transform, load_image_set, multi_view_transform, train_transform
from .build import resolve_amp, set_train_mode
from .checkpoints import Progress, atomic_save, atomic_save_safetensors, atomic_write_text, cpu_state, make_checkpoint
from .config import FinetuneConfig, validate_config
from .distributed import ShardSampler, SkipSampler, all_sum, log_main, sync_buffers
from .evaluate import evaluate
from .events import EventKind, FinetuneResult, TrainEvent, TrainingDiverged
from .loaders import default_workers, make_loader, run_data
from .schedule import get_lr, optimizer_steps_per_epoch, warmup_steps_for
from .start import ModelBuilder, start_run
from .steps import AverageMeter, accuracy, apply_step, clip_gradients, forward_backward

__all__ = ["finetune"]


def finetune(
    config: FinetuneConfig,
    *,
    callback: Callable[[TrainEvent], None] | None = None,
    stop: threading.Event | None = None,
    build: ModelBuilder | None = None,
) -> FinetuneResult:
    """Run the fine-tune that ``config`` describes; see :mod:`resnet_demo.finetune` for the files.

    ``callback`` gets a :class:`TrainEvent` at the start, after every optimizer step,
    after every epoch and at the end (rank 0 only). Setting ``stop`` ends the run at the
    next step with a usable ``last.pth``; so does Ctrl-C (which is then re-raised).
    A NaN or infinite loss raises :class:`TrainingDiverged` and writes nothing more.
    ``build`` replaces the default start (``cfg.weights`` with a new head for the data's
    classes, ``cfg.freeze`` applied): the slim command starts from a pruned model.
    """
    cfg = dataclasses.replace(config)
    validate_config(cfg)
    with distributed_run(cfg.device) as d, run_data(cfg.data, d) as data_root:
        return _Run(cfg, d, data_root, callback, stop, build).run()


class _Stopped(Exception):
    """The stop event was set (the app's cancel button)."""


@dataclass
class _EpochMeters:
    """What one epoch's steps add up, over every process."""

    losses: AverageMeter = field(default_factory=AverageMeter)
    top1: AverageMeter = field(default_factory=AverageMeter)
    grad_norms: AverageMeter = field(default_factory=AverageMeter)
    seen: int = 0  # training images this process saw


class _Run:
    """One fine-tune, split into steps small enough to read. Not reusable."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        d: Dist,
        data_root: Path,
        callback: Callable[[TrainEvent], None] | None,
        stop: threading.Event | None,
        build: ModelBuilder | None = None,
    ) -> None:
        self.cfg, self.d, self.stop, self.build = cfg, d, stop, build
        self.callback = callback if d.main else None
        self.out = Path(cfg.out)
        self.last_path, self.best_path = self.out / "last.pth", self.out / "best.pth"
        self.last_good: Path | None = None  # the newest checkpoint this run wrote or resumed from
        self.progress = Progress()
        self.best_state: dict[str, Tensor] | None = None
        self.total_steps = 0
        self.device = resolve_device(cfg.device, local_rank=d.local_rank)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        # Messages call the data by its own name: a zip is read from a temporary folder.
        name = Path(cfg.data).name
        self.images = load_image_set(data_root, val_fraction=cfg.val_fraction, seed=cfg.seed, name=name)

    def _emit(self, kind: EventKind, **data: Any) -> None:
        if self.callback is not None:
            p = self.progress
            self.callback(TrainEvent(kind, p.epoch, p.global_step, self.total_steps, data))

    # -- set-up

    def _setup(self) -> None:
        start = start_run(
            self.cfg,
            d=self.d,
            device=self.device,
            amp_dtype=self.amp_dtype,
            class_names=self.images.class_names,
            build=self.build,
        )
        self.model, self.ddp, self.params = start.model, start.ddp, start.params
        self.optimizer, self.scaler = start.optimizer, start.scaler
        self.criterion, self.teacher = start.criterion, start.teacher
        self.preprocessing, self.fmt = start.preprocessing, start.memory_format
        self.progress, self.last_good = start.progress, start.resumed_from
        self._setup_data()

    def _setup_data(self) -> None:
        cfg, d, pre = self.cfg, self.d, self.preprocessing
        augment = train_transform(
            crop_size=cfg.image_size,
            scale_range=cfg.scale_range,
            mean=pre.mean,
            std=pre.std,
            random_resized_crop=cfg.random_resized_crop,
            color_jitter=cfg.color_jitter,
        )
        self.train_ds = ImageListDataset(self.images.train, augment)
        if len(self.train_ds) < cfg.batch_size * d.world:
            raise UserError(
                f"The batch size ({cfg.batch_size}) x {d.world} process(es) is more than the {len(self.train_ds)} "
                f"training images; lower the batch size."
            )
        self.sampler = DistributedSampler(self.train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
        self.batches_per_epoch = len(self.sampler) // cfg.batch_size  # drop_last: BN hates a 1-image batch
        self.steps_per_epoch = optimizer_steps_per_epoch(self.batches_per_epoch, cfg.accum_steps)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = warmup_steps_for(cfg, self.steps_per_epoch)
        self.bn_eval = cfg.freeze_bn if cfg.freeze_bn is not None else cfg.batch_size < 8
        self.workers = default_workers(cfg, d)
        val_tf = eval_transform(crop_size=cfg.image_size, resize_size=cfg.eval_resize_size, mean=pre.mean, std=pre.std)
        self.val_loader = self._eval_loader(val_tf)

    def _loader(
        self, dataset: Any, sampler: Sampler[int], batch_size: int, *, drop_last: bool, seed: int
    ) -> DataLoader:
        return make_loader(
            dataset,
            sampler,
            batch_size=batch_size,
            workers=self.workers,
            device=self.device,
            drop_last=drop_last,
            seed=seed,
        )

    def _eval_loader(self, transform: Callable[..., Any], batch_size: int | None = None) -> DataLoader:
        ds = ImageListDataset(self.images.val, transform)
        sampler = ShardSampler(len(ds), self.d.rank, self.d.world)
        return self._loader(ds, sampler, batch_size or self.cfg.batch_size, drop_last=False, seed=0)

    # -- checkpoints

    def _checkpoint(self, *, full: bool, val_top1: float | None, complete: bool = False) -> dict[str, Any]:
        return make_checkpoint(
            cfg=self.cfg,
            class_names=self.images.class_names,
            model=self.model,
            preprocessing=self.preprocessing,
            progress=self.progress,
            total_steps=self.total_steps,
            val_top1=val_top1,
            complete=complete,
            optimizer=self.optimizer if full else None,
            scaler=self.scaler if full else None,
        )

    def _save_last(self, *, val_top1: float | None, complete: bool = False) -> None:
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_save(self._checkpoint(full=True, val_top1=val_top1, complete=complete), self.last_path)
            self.last_good = self.last_path

    # -- the run

    def run(self) -> FinetuneResult:
        """Set up, train every epoch not done yet, and write the summary."""
        cfg, d = self.cfg, self.d
        self._setup()
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
        start = {
            "images": self.images.summary(),
            "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "processes": d.world,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_steps": self.warmup_steps,
            "bn_eval": self.bn_eval,
            "trainable_params": sum(p.numel() for p in self.params),
        }
        log_main(
            d,
            f"fine-tune {cfg.arch} ({cfg.freeze} trains) on {start['device']}, {start['amp']}, "
            f"{d.world} process(es): {start['images']}",
        )
        self._emit("start", **start)
        cancelled = False
        try:
            while self.progress.epoch < cfg.epochs:
                self._train_epoch()
        except _Stopped:
            cancelled = True
            self._save_last(val_top1=None)
            log_main(d, f"cancelled; checkpoint saved at {self.last_path}; continue with --resume {self.last_path}")
        except KeyboardInterrupt:
            self._save_last(val_top1=None)
            log_main(d, f"interrupted; checkpoint saved at {self.last_path}; continue with --resume {self.last_path}")
            raise
        summary = self._finish(cancelled)
        self._emit("done", cancelled=cancelled, summary=summary)
        return FinetuneResult(
            out=self.out,
            best=self.best_path if self.best_path.exists() else None,
            last=self.last_path if self.last_path.exists() else None,
            class_names=self.images.class_names,
            metrics=self.progress.metrics,
            summary=summary,
            cancelled=cancelled,
        )

    def _groups(self) -> list[int]:
        """Sizes of the accumulation groups of this epoch not done yet."""
        acc, n = self.cfg.accum_steps, self.batches_per_epoch
        return [min(acc, n - start) for start in range(0, n, acc) if start >= self.progress.batches_done]

    def _epoch_batches(self, epoch: int) -> DataLoader:
        """This epoch's training batches, from where a resumed run left off."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentation in the main process (workers=0)
        skip = self.progress.batches_done * cfg.batch_size
        sampler: Sampler[int] = SkipSampler(self.sampler, skip) if skip else self.sampler
        return self._loader(self.train_ds, sampler, cfg.batch_size, drop_last=True, seed=cfg.seed * 100_003 + epoch)

    def _train_epoch(self) -> None:
        cfg = self.cfg
        epoch = self.progress.epoch
        loader = self._epoch_batches(epoch)
        set_train_mode(self.model, freeze=cfg.freeze, bn_eval=self.bn_eval)
        meters = _EpochMeters()
        groups = self._groups()
        bar = tqdm(
            total=len(groups),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not (cfg.progress and self.d.main),
            leave=False,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        it = iter(loader)
        try:
            for size in groups:
                if self.stop is not None and self.stop.is_set():
                    raise _Stopped
                mean_loss, lr, grad_norm = self._optimizer_step(it, size, meters)
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}")
                self._emit("step", loss=mean_loss, lr=lr, grad_norm=grad_norm)
        finally:
            bar.close()
            del it  # stops the loader's worker processes now
        self._end_epoch(epoch, meters, train_time=time.perf_counter() - t0)

    def _optimizer_step(self, it: Iterator[Any], size: int, meters: _EpochMeters) -> tuple[float, float, float]:
        """One optimizer step over ``size`` micro-batches; returns (mean loss, lr, gradient norm)."""
        cfg = self.cfg
        lr = get_lr(
            self.progress.global_step,
            base_lr=cfg.lr,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            min_lr=cfg.lr * cfg.min_lr_ratio,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step_loss, step_correct, step_n = self._accumulate(it, size)
        # One sum over processes: every rank sees a NaN anywhere and stops together.
        local = torch.stack([step_loss, step_correct]).tolist()  # one device sync per step
        total_loss, total_correct, total_n = all_sum([*local, float(step_n)], self.device, self.d)
        mean_loss = total_loss / total_n
        if not math.isfinite(mean_loss):
            self._diverged(mean_loss, lr)
        grad_norm = clip_gradients(self.optimizer, self.scaler, self.params, max_norm=cfg.clip_grad_norm)
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self._diverged(grad_norm, lr, what="gradient norm")
        apply_step(self.optimizer, self.scaler)
        self.progress.global_step += 1
        self.progress.batches_done += size
        meters.seen += step_n
        meters.losses.update(mean_loss, int(total_n))
        meters.top1.update(100.0 * total_correct / total_n, int(total_n))
        if math.isfinite(grad_norm):
            meters.grad_norms.update(grad_norm)
        return mean_loss, lr, grad_norm

    def _accumulate(self, it: Iterator[Any], size: int) -> tuple[Tensor, Tensor, int]:
        """Forward and backward of ``size`` micro-batches; returns (loss sum, correct, images) here."""
        step_loss = torch.zeros((), device=self.device)
        step_correct = torch.zeros((), device=self.device)
        step_n = 0
        for j in range(size):
            images, targets = next(it)
            images = images.to(self.device, non_blocking=True, memory_format=self.fmt)  # (B, 3, H, W)
            targets = targets.to(self.device, non_blocking=True)
            # Gradients are all-reduced once per optimizer step, not once per micro-batch.
            sync = j == size - 1 or not isinstance(self.ddp, nn.parallel.DistributedDataParallel)
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[operator]
            with ctx:
                loss, logits = forward_backward(
                    self.ddp,
                    images,
                    targets,
                    criterion=self.criterion,
                    amp_dtype=self.amp_dtype,
                    scaler=self.scaler,
                    loss_divisor=size,
                    teacher=self.teacher,
                )
            step_loss += loss.float() * targets.shape[0]
            step_correct += accuracy(logits.float(), targets)[0]
            step_n += targets.shape[0]
        return step_loss, step_correct, step_n

    def _end_epoch(self, epoch: int, meters: _EpochMeters, *, train_time: float) -> None:
        """Validate, record the metrics row, write the epoch's files, and report."""
        cfg, d, p = self.cfg, self.d, self.progress
        sync_buffers(self.model, d)
        val = self._evaluate(self.val_loader)
        images_per_s = all_sum([meters.seen / max(train_time, 1e-9)], self.device, d)[0]
        row = {
            "epoch": epoch + 1,
            "step": p.global_step,
            "train_loss": meters.losses.avg,
            "train_top1": meters.top1.avg,
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": images_per_s,
            "grad_norm": meters.grad_norms.avg,
            "time_s": train_time,
        }
        p.metrics.append(row)
        p.epoch, p.batches_done = epoch + 1, 0
        improved = val["top1"] > p.best_top1
        if improved:
            p.best_top1 = val["top1"]
            self.best_state = cpu_state(self.model)  # every rank keeps it, for the extra test
        if d.main:
            self._save_last(val_top1=val["top1"], complete=p.epoch == cfg.epochs)
            if improved:
                best = self._checkpoint(full=False, val_top1=val["top1"])
                atomic_save(best, self.best_path)
                atomic_save_safetensors(checkpoint=best, path=self.best_path.with_suffix(".safetensors"))
            atomic_write_text("".join(json.dumps(r) + "\n" for r in p.metrics), self.out / "metrics.jsonl")
        log_main(
            d,
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {meters.losses.avg:.4f}, val loss {val['loss']:.4f}, "
            f"val top-1 {val['top1']:.1f}%, top-5 {val['top5']:.1f}%, {images_per_s:.1f} images/s",
        )
        self._emit("epoch", **row)

    def _evaluate(self, loader: DataLoader) -> dict[str, float]:
        return evaluate(
            self.model,
            loader,
            device=self.device,
            amp_dtype=self.amp_dtype,
            channels_last=self.cfg.channels_last,
            d=self.d,
        )

    def _diverged(self, value: float, lr: float, *, what: str = "loss") -> None:
        raise TrainingDiverged(
            f"Training diverged: the {what} became {value} at epoch {self.progress.epoch + 1}, optimizer step "
            f"{self.progress.global_step + 1} (learning rate {lr:.3g}), so the run stopped without saving that state. "
            f"Try a learning rate 10x lower.",
            last_good=self.last_good,
        )

    # -- the end

    def _finish(self, cancelled: bool) -> dict[str, Any]:
        """The summary (with the extra test of ``best.pth`` when asked for), written by rank 0."""
        cfg, images, metrics = self.cfg, self.images, self.progress.metrics
        summary: dict[str, Any] = {
            "arch": cfg.arch,
            "class_names": list(images.class_names),
            "train_images": len(images.train),
            "val_images": len(images.val),
            "skipped_images": len(images.skipped),
            "split": images.split,
            "epochs_done": self.progress.epoch,
            "steps_done": self.progress.global_step,
            "cancelled": cancelled,
            "best_val_top1": self.progress.best_top1 if metrics else None,
            "best": str(self.best_path) if self.best_path.exists() else None,
            "last": str(self.last_path) if self.last_path.exists() else None,
        }
        if metrics:
            best = max(metrics, key=lambda r: r["val_top1"])
            summary["center_crop"] = {k: best[f"val_{k}"] for k in ("loss", "top1", "top5")}
        if self.best_state is None and self.best_path.exists() and self.d.world == 1:
            self.best_state = read_pth(self.best_path)["model"]  # resumed after the best epoch
        if cfg.extra_eval != "none" and not cancelled and self.best_state is not None:
            self._extra_eval(summary, self.best_state)
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps(summary, indent=2) + "\n", self.out / "summary.json")
        return summary

    def _extra_eval(self, summary: dict[str, Any], best_state: dict[str, Tensor]) -> None:
        """The ten-crop or multi-scale test of the best weights, beside their single-crop result."""
        cfg = self.cfg
        self.model.load_state_dict(best_state)
        sizes = [cfg.eval_resize_size]
        if cfg.extra_eval == "multi-scale":
            sizes = [cfg.eval_resize_size, cfg.scaled(320), cfg.scaled(384)]
        tf = multi_view_transform(
            crop_size=cfg.image_size, resize_sizes=sizes, mean=self.preprocessing.mean, std=self.preprocessing.std
        )
        views = self._eval_loader(tf, batch_size=max(1, cfg.batch_size // (10 * len(sizes))))
        summary[cfg.extra_eval] = self._evaluate(views)
        log_main(
            self.d,
            f"{cfg.extra_eval} test of best.pth: top-1 {summary[cfg.extra_eval]['top1']:.1f}% "
            f"(center crop {summary['center_crop']['top1']:.1f}%)",
        )
