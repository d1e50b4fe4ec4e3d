"""Model loading safety, checkpoints, model resolution for the CLI, and the trainer."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from hudd_core.models import alexnet, kpnet, load_model
from hudd_core.models.checkpoint import (
    load_checkpoint,
    read_meta,
    resolve_model,
    save_checkpoint,
)
from hudd_core.models.train import he_init, train

META = {
    "model": "alexnet",
    "kwargs": {"num_classes": 3, "in_channels": 1, "input_size": 32},
    "task": "classifier",
    "classes": ["a", "b", "c"],
    "in_channels": 1,
    "input_size": 32,
}


def _same(m1: torch.nn.Module, m2: torch.nn.Module) -> bool:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_pickled_whole_model_needs_trust(tmp_path):
    model = alexnet(3, 1, 32)
    path = tmp_path / "whole.pt"
    torch.save(model, path)  # a pickled nn.Module, not a state_dict
    with pytest.raises(ValueError, match="trust"):
        load_model("alexnet", path, num_classes=3, in_channels=1, input_size=32)
    loaded = load_model("alexnet", path, trust=True, num_classes=3, in_channels=1, input_size=32)
    assert _same(loaded, model)


def test_state_dict_loads_and_mismatch_is_named(tmp_path):
    model = alexnet(3, 1, 32)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    assert _same(load_model("alexnet", path, num_classes=3, in_channels=1, input_size=32), model)
    with pytest.raises(ValueError, match="do not match"):
        load_model("alexnet", path, num_classes=4, in_channels=1, input_size=32)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = alexnet(3, 1, 32)
    pt = save_checkpoint(model, tmp_path / "DNNModels", "m", {**META, "extra": [1, 2]})
    assert pt == tmp_path / "DNNModels" / "m.pt"
    assert json.loads(pt.with_suffix(".json").read_text())["extra"] == [1, 2]
    for path in (pt, pt.with_suffix(".json")):
        loaded, meta = load_checkpoint(path)
        assert _same(loaded, model) and not loaded.training
        assert meta["classes"] == ["a", "b", "c"] and meta["task"] == "classifier"
    x = torch.rand(2, 1, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert not list((tmp_path / "DNNModels").glob("*.tmp"))


def test_checkpoint_validates_metadata(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(alexnet(3, 1, 32), tmp_path, "m", {"model": "alexnet"})
    with pytest.raises(ValueError, match="task"):
        save_checkpoint(alexnet(3, 1, 32), tmp_path, "m", {**META, "task": "detector"})
    with pytest.raises(FileNotFoundError, match="sidecar"):
        read_meta(tmp_path / "none.pt")


def test_resolve_model_from_data(tmp_path):
    from hudd_core.data.generate import generate

    generate(tmp_path / "D", sizes={"TrainingSet": 12}, image_size=32, progress=False)
    model, meta = resolve_model("alexnet", None, tmp_path / "D")
    assert meta["classes"] == sorted(
        p.name for p in (tmp_path / "D/TrainingSet").iterdir() if p.is_dir()
    )
    assert meta["input_size"] == 32 and meta["kwargs"]["num_classes"] == 6
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 6)
    with pytest.raises(ValueError, match="--model is needed"):
        resolve_model(None, None, tmp_path / "D")
    pt = save_checkpoint(model, tmp_path, "m", meta)
    with pytest.raises(ValueError, match="differs"):
        resolve_model("resnet", pt, tmp_path / "D")


def _toy(n: int = 64, seed: int = 0) -> TensorDataset:
    """Bright-left vs bright-right images: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.2
    x[y == 0, :, :, :8] += 0.8
    x[y == 1, :, :, 8:] += 0.8
    return TensorDataset(x, y)


def test_train_learns_and_is_deterministic():
    def run():
        torch.manual_seed(123)
        m = he_init(alexnet(2, 1, 16), seed=1)
        losses = train(
            m,
            _toy(),
            epochs=4,
            lr=1e-3,
            batch_size=16,
            optimizer="adam",
            weight_decay=0.0,
            seed=7,
            device="cpu",
            progress=False,
        )
        return m, losses

    m1, l1 = run()
    m2, l2 = run()
    assert l1 == l2 and _same(m1, m2)
    assert l1[-1] < l1[0] * 0.5
    x, y = _toy(seed=1).tensors
    assert (m1(x).argmax(1) == y).float().mean() > 0.9 and not m1.training
    fresh = alexnet(2, 1, 16)
    state = torch.random.get_rng_state()
    train(fresh, _toy(), epochs=1, seed=3, device="cpu", progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched


def test_train_matches_a_plain_sgd_loop():
    """train's channels_last layout on the CPU changes the speed, not the result: the same
    weights (to float32 rounding) as a plain contiguous SGD loop written here."""
    import copy

    torch.manual_seed(0)
    start = he_init(alexnet(2, 1, 16), seed=2)
    data = _toy(n=40)
    tuned = copy.deepcopy(start)
    train(tuned, data, epochs=2, lr=1e-2, batch_size=16, seed=5, device="cpu", progress=False)
    plain = copy.deepcopy(start).train()
    opt = torch.optim.SGD(plain.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        gen = torch.Generator().manual_seed(5)
        for _ in range(2):
            loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, generator=gen)
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(plain(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    for (name, a), b in zip(tuned.state_dict().items(), plain.state_dict().values(), strict=True):
        assert a.is_contiguous(), name  # handed back in the default layout
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_train_keeps_the_layout_of_a_model_that_views():
    """A forward with ``x.view`` cannot take channels_last: train keeps the default."""

    class Viewing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 16 * 16, 2)

        def forward(self, x):
            h = self.conv(x)
            return self.fc(h.view(h.size(0), -1))

    torch.manual_seed(0)
    m = Viewing()
    with pytest.raises(RuntimeError, match="view"):  # what channels_last would do
        m.to(memory_format=torch.channels_last)(
            torch.rand(2, 1, 16, 16).contiguous(memory_format=torch.channels_last)
        )
    m.to(memory_format=torch.contiguous_format)
    losses = train(m, _toy(n=32), epochs=2, lr=1e-2, batch_size=8, device="cpu", progress=False)
    assert len(losses) == 2 and losses[-1] < losses[0] and not m.training


def test_train_mse_for_keypoints_and_fine_tunes_from_current_weights():
    torch.manual_seed(0)
    m = kpnet(2, 1, 16)
    x = torch.rand(32, 1, 16, 16)
    y = torch.full((32, 4), 8.0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    losses = train(
        m,
        TensorDataset(x, y),
        epochs=3,
        lr=1e-2,
        batch_size=8,
        loss="mse",
        device="cpu",
        progress=False,
    )
    assert losses[-1] < losses[0]
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="loss"):
        train(m, TensorDataset(x, y), epochs=1, loss="l1", progress=False)
    with pytest.raises(ValueError, match="empty"):
        train(m, TensorDataset(x[:0], y[:0]), epochs=1, progress=False)


def test_he_init_scale():
    m = he_init(alexnet(3, 1, 32), seed=0)
    w = m.features[6].weight  # 64 -> 96 channels, 3x3: fan_in 576
    assert abs(float(w.detach().std()) - (2 / 576) ** 0.5) < 0.002
    assert float(m.features[6].bias.detach().abs().max()) == 0


def test_train_rejects_unknown_schedule_and_optimizer():
    ds = _toy(8)
    with pytest.raises(ValueError, match="schedule"):
        train(alexnet(2, 1, 16), ds, epochs=1, schedule="step", progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train(alexnet(2, 1, 16), ds, epochs=1, optimizer="rmsprop", progress=False)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "vit_b_32"])
def test_torchvision_builder_from_the_command_line(tmp_path, model_workdir, name):
    """``--model torchvision.models:NAME``: the classes from the data, the ViT's image
    size from the images, grey images as its 3 channels; the stored sidecar rebuilds it;
    heatmaps follow."""
    from hudd_core.cli import main

    ws = model_workdir({"TrainingSet": 6, "TestSet": 6}, name=name)
    spec = f"torchvision.models:{name}"
    _, meta = resolve_model(spec, None, ws.data)
    assert meta["kwargs"] == {"num_classes": 6, "input_size": 32} and meta["in_channels"] == 3
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    extra = {"image_size": 32} if name.startswith("vit") else {}
    import torchvision

    net = torchvision.models.get_model(name, num_classes=6, **extra)
    torch.save(net.state_dict(), weights)
    common = ["--data", str(ws.data), "--workdir", str(ws.root / "T2"), "--quiet"]
    assert main(["test", "--model", spec, "--weights", str(weights), *common]) == 0
    rebuilt, _ = load_checkpoint(ws.root / "T2" / "DNNModels" / "w.pt")
    assert _same(rebuilt, net)
    layer = "features.0.0" if name.startswith("mobilenet") else "conv_proj"
    assert main(["heatmaps", "--layers", layer, "input", *common]) == 0
    with pytest.raises(ValueError, match="not a torchvision classifier"):
        resolve_model("torchvision.models:nope", None, ws.data)
