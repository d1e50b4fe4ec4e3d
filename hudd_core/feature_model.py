"""``--feature-model``: a user-given feature extractor for ``hudd cluster`` (SAFE style).

SAFE (Attaoui et al., TOSEM 2023) clusters the error images by the features of a
pretrained network instead of the heatmaps of the DNN under test. Nothing is downloaded:
the engineer brings the extractor as a model spec (``torchvision.models:resnet18``,
``file.py:factory``, ``package.module:factory``: :func:`hudd_core.models.loading.resolve_factory`,
built without arguments) and its weights (a state_dict read with ``weights_only=True``;
a pickled whole model only with ``trust``). The features of an image are the model's
output, or with ``layer`` the output of that named module, flattened. Images are read as
the extractor's first convolution expects (3 channels for an ImageNet model: a grey
image is repeated), at ``image_size`` with ``mean``/``std`` when given.

Example:
    >>> import tempfile, torch
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp()); (root / "TestSet").mkdir()
    >>> Image.new("L", (8, 8), 128).save(root / "TestSet" / "a.png")
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    >>> extract_features(net, root, ["TestSet/a.png"], progress=False).shape
    (1, 72)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hudd_core._ext import resolve_device
from hudd_core.data.datasets import image_source, load_image
from hudd_core.models.checkpoint import first_layer_channels
from hudd_core.models.loading import load_model
from hudd_core.progress import bar as progress_bar


def load_feature_model(spec: str, weights: str | Path | None = None, *,
                       trust: bool = False, seed: int = 0) -> nn.Module:  # fmt: skip
    """The extractor ``spec`` (built without arguments, its initial weights drawn with
    ``seed``, so that the same call gives the same features even without ``weights``)
    with ``weights``, in eval mode; errors name ``--feature-model``."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return load_model(spec, weights, trust=trust)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        raise ValueError(f"--feature-model {spec}: {exc}") from exc


class _Images(Dataset):
    """The images ``ids`` (relative to the DataSets ``root``), unlabeled."""

    def __init__(self, root: Path, ids: Sequence[str], channels: int, **preprocessing):
        self.root, self.ids, self.channels = Path(root), list(ids), channels
        self.pre = preprocessing

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(image_source(self.root, self.ids[i]), self.channels, **self.pre)


def _output_of(model: nn.Module, layer: str | None):
    """A function of a batch giving the model's output, or ``layer``'s (a forward hook)."""
    if layer is None:
        return model
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n][:12]
        raise ValueError(f"--feature-layer {layer!r} is not a module of the feature model "
                         f"(some are: {', '.join(names)})")  # fmt: skip
    seen: list = []
    modules[layer].register_forward_hook(lambda _m, _i, out: seen.append(out))

    def run(x: torch.Tensor):
        seen.clear()
        model(x)
        return seen[-1]

    return run


def extract_features(
    model: nn.Module,
    data_root: str | Path,
    ids: Sequence[str],
    *,
    layer: str | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> np.ndarray:
    """The ``len(ids) × D`` float32 features of the images ``ids`` (see the module
    docstring); a ValueError names the image whose features are not finite."""
    param = next(model.parameters(), None)
    dev = resolve_device(device, param.device if param is not None else torch.device("cpu"))
    model = model.to(dev).eval()
    channels = first_layer_channels(model) or 3
    items = _Images(data_root, ids, channels, image_size=image_size, mean=mean, std=std)
    run = _output_of(model, layer)
    rows: list[np.ndarray] = []
    with torch.no_grad(), progress_bar(total=len(items), desc="features", unit="img",
                                       enabled=progress) as bar:  # fmt: skip
        for x in DataLoader(items, batch_size=batch_size):
            out = run(x.to(dev))
            out = out[0] if isinstance(out, tuple | list) else out
            rows.append(out.reshape(len(x), -1).float().cpu().numpy())
            bar.update(len(x))
    F = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    bad = np.flatnonzero(~np.isfinite(F).all(axis=1))
    if len(bad):
        raise ValueError(f"--feature-model: NaN or inf features for image {ids[bad[0]]}")
    return F
