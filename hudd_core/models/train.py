"""Training and fine-tuning a model (the demo's initial training; HUDD's retraining step).

``train`` starts from the model's current weights, so the retrain step calls it with the
reference hyper-parameters (docs/design.md#retraining: SGD lr 1e-3, momentum 0.9, decay 5e-4,
batch 128, about 10 epochs) on training set + balanced unsafe set.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from hudd_core.models import alexnet
    >>> ds = TensorDataset(torch.rand(16, 1, 32, 32), torch.randint(0, 3, (16,)))
    >>> losses = train(alexnet(3, 1, 32), ds, epochs=1, batch_size=8, progress=False)
    >>> len(losses)
    1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hudd_core._ext import resolve_device  # the one device rule (also used by testing)
from hudd_core.data.decoded import Decoded
from hudd_core.progress import bar as progress_bar

LOSSES = {"cross_entropy": nn.CrossEntropyLoss, "mse": nn.MSELoss}


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    seed: int = 0,
    loss: str = "cross_entropy",
    optimizer: str = "sgd",
    schedule: str = "constant",
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    frozen: Sequence[nn.Module] = (),
) -> list[float]:
    """Trains ``model`` in place from its current weights; returns the mean loss per epoch.

    ``loss``: ``cross_entropy`` (classifiers) or ``mse`` (keypoint regressors).
    ``optimizer``: ``sgd`` (with ``momentum``) or ``adam``. ``schedule``: ``constant`` (the
    reference retraining) or ``cosine`` (the rate decays to 0 over the run). Shuffling and
    dropout follow ``seed``; the global torch RNG state is left as it was. The model ends in
    eval mode. Only parameters with ``requires_grad`` are trained; the modules ``frozen``
    stay in eval mode (BatchNorm statistics and dropout as at inference). Without
    ``num_workers`` the images are decoded in the first epoch only (:class:`Decoded`).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty data set")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    dev = resolve_device(device)
    if num_workers == 0:  # workers would each fill (and drop) their own copy
        dataset = Decoded(dataset)
    layout = _fast_layout(model.to(dev), dev, dataset[0][0])  # image 0: decoded once, kept
    model.train()
    for m in frozen:
        m.eval()
    opt = _optimizer(model, optimizer, lr, momentum, weight_decay)
    criterion = LOSSES[loss]()
    history = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                            num_workers=num_workers, pin_memory=dev.type == "cuda")  # fmt: skip
        steps = epochs * len(loader)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)) if schedule == "cosine" else 1
        )
        for epoch in range(epochs):
            bar = progress_bar(loader, desc=f"train epoch {epoch + 1}/{epochs}", enabled=progress)
            history.append(_epoch(model, bar, criterion, opt, sched, dev, layout,
                                  mse=loss == "mse"))  # fmt: skip
    model.to(memory_format=torch.contiguous_format).eval()
    return history


def _fast_layout(model: nn.Module, dev: torch.device, image: Any) -> torch.memory_format:
    """Puts ``model`` in ``channels_last`` and returns it for a model with 2-d convolutions
    trained on the CPU: oneDNN's convolutions and pooling run 1.2-1.9x faster per SGD step
    in it (bench_retrain's cases, one thread); ``train`` hands the model back in the
    default layout. A model whose forward cannot take it (``x.view`` of a channels-last
    tensor raises), tried on ``image`` in eval mode (no state changes), keeps its own
    (``preserve_format``)."""
    x = torch.as_tensor(image).unsqueeze(0)
    if dev.type != "cpu" or x.dim() != 4 or not any(isinstance(m, nn.Conv2d)
                                                    for m in model.modules()):  # fmt: skip
        return torch.preserve_format
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval().to(memory_format=torch.channels_last)
            model(x.contiguous(memory_format=torch.channels_last))
        return torch.channels_last
    except RuntimeError:
        model.to(memory_format=torch.contiguous_format)
        return torch.preserve_format
    finally:
        model.train(was_training)


def _optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimiser of the parameters with ``requires_grad``: ``sgd`` or ``adam``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def _epoch(
    model: nn.Module,
    bar: Any,
    criterion: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    dev: torch.device,
    layout: torch.memory_format,
    *,
    mse: bool,
) -> float:
    """One pass over the batches of ``bar`` (a loader in a progress bar) in the memory
    ``layout`` of :func:`_fast_layout`; the mean loss."""
    total, count = 0.0, 0
    for x, y in bar:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if x.dim() == 4 and layout == torch.channels_last:
            x = x.contiguous(memory_format=layout)
        out = model(x)
        batch_loss = criterion(out, y.to(out.dtype) if mse else y)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        sched.step()
        total += batch_loss.item() * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / count


def he_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialises conv and linear layers with He (Kaiming) normal weights, zero biases.

    PyTorch's default init leaves deep ReLU nets without normalisation (the AlexNet-style
    zoo model) on a loss plateau for epochs; He init starts them learning at once.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
    return model
