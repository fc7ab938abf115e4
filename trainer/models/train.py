"""The training loop, readable top to bottom: batches, one epoch, early stopping on
``val`` macro F1, prediction."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from trainer import distributed
from trainer.config import TrainSettings
from trainer.encoders.cache import Features
from trainer.evaluation.metrics import macro_f1


class Inputs:
    """Turns rows of ``Features`` into model batches (tensors), with modality dropout.

    ``with_pixels`` adds the photos (for training the image encoders), with a random
    horizontal flip and, with ``augment``, photometric jitter (``photometric``) on training
    batches; heads read the cached encoder outputs instead.
    """

    def __init__(self, feats: Features, with_pixels: bool = False, augment: bool = False):
        self.f = feats
        self.with_pixels, self.augment = with_pixels, augment

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None = None, dropout: float = 0.0) -> dict:
        f = self.f
        text_present = f.text_present[idx].copy()
        image_present = np.ones(len(idx), bool)
        if rng is not None:
            # Hide one modality of some cases so that no model breaks when a note or photo is missing.
            hide = rng.random(len(idx)) < dropout
            which = rng.random(len(idx)) < 0.5
            text_present &= ~(hide & which)
            image_present &= ~(hide & ~which)
        batch = {"text_present": torch.from_numpy(text_present), "image_present": torch.from_numpy(image_present)}
        if f.text_tokens is not None:
            mask = f.text_mask[idx]
            # Cut the padding every note of this batch shares: attention costs scale with length.
            length = max(1, int(np.flatnonzero(mask.any(0)).max(initial=0)) + 1)
            batch["tokens"] = torch.from_numpy(f.text_tokens[idx, :length].astype(np.float32))  # (batch, L, d)
            batch["mask"] = torch.from_numpy(mask[:, :length])
        if f.ngram_ids is not None:
            batch["ngram_ids"] = torch.from_numpy(f.ngram_ids[idx])
            batch["ngram_weights"] = torch.from_numpy(f.ngram_weights[idx])
        for name in ("image_tokens", "clip_img", "clip_txt", "lit_pooled"):
            value = getattr(f, name)
            if value is not None:
                batch[name] = torch.from_numpy(value[idx].astype(np.float32))
        if self.with_pixels:
            images = torch.from_numpy(f.images[idx]).permute(0, 3, 1, 2).float() / 255  # (batch, 3, S, S)
            if rng is not None:
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
                images[flip] = images[flip].flip(-1)
                if self.augment:
                    images = photometric(images, rng)
            images[torch.from_numpy(~image_present)] = 0.0
            batch["images"] = batch["clip_images"] = images
        if f.clip_tokens is not None:
            batch["clip_tokens"] = torch.from_numpy(f.clip_tokens[idx])
        return batch


def photometric(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """What another clinic's camera does to a photo, at random per photo: brightness x0.6-1.3,
    a colour cast of x0.85-1.15 per channel, and a 3x3 blur for a third of the photos.
    (batch, 3, S, S) in [0, 1] -> the same shape."""
    n = len(images)
    gain = rng.uniform(0.6, 1.3, (n, 1, 1, 1)) * rng.uniform(0.85, 1.15, (n, 3, 1, 1))
    out = images * torch.from_numpy(gain.astype(np.float32))
    blur = torch.from_numpy(rng.random(n) < 1 / 3)
    if blur.any():
        out[blur] = torch.nn.functional.avg_pool2d(out[blur], 3, stride=1, padding=1, count_include_pad=False)
    return out.clamp(0, 1)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1, so rare classes (emergency) count as much as common ones."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def _loss(model: nn.Module, batch: dict, y: torch.Tensor, ce: nn.Module) -> torch.Tensor:
    if hasattr(model, "logits_and_contrastive"):  # the CLIP encoder: contrastive pairs plus classes
        logits, contrastive = model.logits_and_contrastive(batch)
        return ce(logits, y) + 0.5 * contrastive
    return ce(model(batch), y)


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: Inputs, idx: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (len(idx), n_classes) in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    out = [model({k: v.to(device) for k, v in inputs.batch(idx[s:s + batch_size]).items()}).float().cpu().numpy()
           for s in range(0, len(idx), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.spec["n_classes"]), np.float32)


def train_classifier(model: nn.Module, inputs: Inputs, y: np.ndarray, train_idx: np.ndarray,
                     val_idx: np.ndarray, cfg: TrainSettings, epochs: int, desc: str, lr: float | None = None
                     ) -> tuple[nn.Module, list[dict]]:
    """AdamW with class weights; keep the weights of the epoch with the best val macro F1.
    Under torchrun: DistributedDataParallel (``distributed_step``)."""
    n_classes = model.spec["n_classes"]
    lr = lr or cfg.lr
    torch.manual_seed(cfg.seed)
    # A model may ask for its own learning rates per parameter group (a pretrained tower slower).
    groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": model.parameters(), "lr": lr}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    parallel = distributed.world() > 1
    steps = epochs * int(np.ceil(len(train_idx) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                total_steps=max(steps, 1), pct_start=0.15)
    weight = class_weights(y[train_idx], n_classes)
    make_step = distributed_step if parallel else one_process_step
    epoch_batches = _epochs(inputs, train_idx, cfg, make_step(model, y, weight))
    best, best_state, history, stale = -1.0, copy.deepcopy(model.state_dict()), [], 0
    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        for step in tqdm(next(epoch_batches), desc=f"{desc} epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                         mininterval=1, disable=not distributed.is_main()):
            opt.zero_grad()
            loss, n = step()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total, seen = total + float(loss.detach()) * n, seen + n
        # Every rank takes rank 0's judgement, so all stop at the same epoch.
        val_f1 = distributed.from_main(macro_f1(y[val_idx], predict_logits(model, inputs, val_idx).argmax(1),
                                                n_classes))
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_macro_f1": val_f1})
        if val_f1 > best:
            best, best_state, stale = val_f1, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:  # early stopping
                break
    model.load_state_dict(best_state)
    if parallel:
        model.cpu()
        for tensor in model.state_dict().values():  # rank 0's batch-norm statistics everywhere
            torch.distributed.broadcast(tensor, src=0)
    model.eval()
    return model, history


def _epochs(inputs: Inputs, train_idx: np.ndarray, cfg: TrainSettings, step):
    """For each epoch, its steps. The draws (case order, flips, hidden modalities) are one
    process's, on every rank; ``step(idx, batch)`` gives a callable that returns the step's
    loss and its number of cases, or None to skip the step."""
    rng = np.random.default_rng(cfg.seed)
    while True:
        order = rng.permutation(train_idx)

        def steps(order=order):
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                todo = step(idx, inputs.batch(idx, rng, cfg.modality_dropout))
                if todo is not None:
                    yield todo
        yield steps()


def one_process_step(model: nn.Module, y: np.ndarray, weight: torch.Tensor):
    """One process: a step's class-weighted loss over all its cases."""
    ce = nn.CrossEntropyLoss(weight=weight)
    return lambda idx, batch: lambda: (_loss(model, batch, torch.from_numpy(y[idx]), ce), len(idx))


class Objective(nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel wraps all of it.

    The class-weighted cross-entropy of this rank's rows is summed and divided by the weight
    of the whole step's rows over all ranks, times the ranks: DistributedDataParallel's
    average of the gradients is then the one-process gradient of the whole step."""

    def __init__(self, model: nn.Module, weight: torch.Tensor, world: int):
        super().__init__()
        self.model, self.world = model, world
        self.register_buffer("weight", weight)

    def forward(self, batch: dict, y: torch.Tensor, step_weight: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "logits_and_contrastive"):  # the CLIP: contrastive pairs of this rank's rows
            logits, contrastive = self.model.logits_and_contrastive(batch)
            extra = 0.5 * contrastive
        else:
            logits, extra = self.model(batch), 0.0
        ce = nn.functional.cross_entropy(logits, y, weight=self.weight, reduction="sum")
        return ce / step_weight * self.world + extra


def distributed_step(model: nn.Module, y: np.ndarray, weight: torch.Tensor):
    """Under torchrun: a step shared out. Every rank keeps every world-th case of the
    one-process step, as DistributedSampler(shuffle=False) shares a batch out, so a step
    sees the same cases and the same averaged gradient as in one process, but for the
    dropout masks and the batch-norm statistics, which are each rank's own. The model trains
    on this rank's device (a GPU under nccl) and comes back to the CPU at the end."""
    from torch.nn.parallel import DistributedDataParallel

    device, world, rank = distributed.device(), distributed.world(), distributed.rank()
    if device.type == "cuda":  # batch statistics across ranks (SyncBatchNorm needs a GPU)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    ddp = DistributedDataParallel(Objective(model, weight, world).to(device), find_unused_parameters=True)

    def step(idx: np.ndarray, batch: dict):
        if len(idx) < world:  # too few cases to give every rank one (the same on every rank)
            return None
        mine = {k: v[rank::world].to(device) for k, v in batch.items()}
        target = torch.from_numpy(y[idx][rank::world]).to(device)
        step_weight = weight[torch.from_numpy(y[idx])].sum().to(device)
        return lambda: (ddp(mine, target, step_weight), len(target))
    return step
