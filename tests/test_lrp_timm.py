"""LRP under the default composite on a representative of every timm family (the smallest
classifier of each timm model module, by parameter count): random weights at a trained
model's scale, 10 classes, batch 2, float32 as users run it, the smallest input each
accepts. Nothing is downloaded (``pretrained=False``).

Every recorded layer is finite, the input relevance is not zero, and with biases,
BatchNorm shifts and position embeddings zeroed the input relevance sums to the
explained logit within 1% where the rules conserve; where they cannot (AttnLRP's softmax
rule drops its bias-like terms; a division of two relevance-carrying values, as in linear
attention, is not linear) it is positive and at most twice the logit.

A few fast representatives run by default; the rest are marked ``slow`` and run only with
``HUDD_ZOO=1`` (the largest have 0.4 billion parameters)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch import nn

from hudd_core.lrp import LRP
from hudd_core.lrp.attention import Traced
from hudd_core.lrp.oprules import Norm, Softmax
from hudd_testkit.trained_scale import at_trained_scale

timm = pytest.importorskip("timm")

# timm model module -> its smallest classifier (parameter count, timm 1.0.31; not an
# encoder without a head such as gemma4_vit_167m_enc)
REPRESENTATIVES = {
    "beit": "beit_base_patch16_224", "byoanet": "halonet_h1", "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224", "coat": "coat_tiny", "convit": "convit_tiny",
    "convmixer": "convmixer_768_32", "convnext": "test_convnext", "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240", "csatv2": "csatv2", "cspnet": "cs3darknet_focus_s",
    "cspnext": "cspnext_tiny", "davit": "davit_tiny", "deepseek_vit": "deepseek_vit_412m",
    "deit": "deit_tiny_patch16_224", "densenet": "densenet121", "dla": "dla46x_c",
    "dpn": "dpn48b", "edgenext": "edgenext_xx_small", "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0", "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1", "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0", "eva": "vit_tiny_patch16_dinov3_qkvb",
    "fasternet": "fasternet_t0", "fastvit": "fastvit_t8", "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny", "gemma4_vit": "gemma4_vit_167m", "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_b", "hgnet": "hgnetv2_b0", "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny", "hrnet": "hrnet_w18_small", "iformer": "iformer_t",
    "inception_next": "inception_next_atto", "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3", "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small", "levit": "levit_128s", "lowformer": "lowformer_b0",
    "mambaout": "test_mambaout", "maxxvit": "test_coatnet", "metaformer": "poolformerv2_s12",
    "mlp_mixer": "gmlp_ti16_224", "mobilenetv3": "lcnet_035",
    "mobilenetv5": "mobilenetv5_base", "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny", "naflexvit": "naflexvit_base_patch16_parfac_gap",
    "nasnet": "nasnetalarge", "nest": "nest_tiny", "nextvit": "nextvit_small",
    "nfnet": "test_nfnet", "pit": "pit_ti_224", "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b0", "qwen3_vit": "qwen3_vit_88m", "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002", "repghost": "repghostnet_050", "repvit": "repvit_m1",
    "res2net": "res2next50", "resnest": "resnest14d", "resnet": "test_resnet",
    "resnetv2": "resnetv2_18", "rexnet": "rexnet_100", "selecsls": "selecsls42",
    "senet": "legacy_seresnet18", "sequencer": "sequencer2d_s", "shvit": "shvit_s1",
    "sknet": "skresnet18", "starnet": "starnet_s050", "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224", "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224", "tresnet": "tresnet_m", "twins": "twins_svt_small",
    "vgg": "vgg11", "visformer": "visformer_tiny", "vision_transformer": "test_vit",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "test_vit_relpos",
    "vision_transformer_sam": "samvit_base_patch16_224", "vitamin": "vitamin_small_224",
    "volo": "volo_d1_224", "vovnet": "ese_vovnet19b_slim_dw", "xception": "legacy_xception",
    "xception_aligned": "xception41p", "xcit": "xcit_nano_12_p8_224",
}  # fmt: skip
# In the default suite: a second or two each, and between them the functional BatchNorm
# (BatchNormAct2d), weight standardisation, SDPA, the recorded fallback and LayerNorm2d.
FAST = {"test_resnet", "test_efficientnet", "test_nfnet", "test_vit", "test_convnext"}
SIZES = (32, 48, 64, 96, 128, 160, 224, 240, 256, 299, 331)


def test_every_family_has_a_representative():
    missing = set(timm.list_modules()) - set(REPRESENTATIVES)
    assert not missing
    assert len(REPRESENTATIVES) >= 60


def _smallest(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model built for, and a batch of, the smallest square input it accepts (models
    with a fixed input size are built for each size tried)."""
    base = timm.create_model(name, pretrained=False, num_classes=10)
    fixed = base.pretrained_cfg.get("fixed_input_size", False)
    default = base.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    for size in sorted({*SIZES, default}):
        model = base
        if fixed:
            try:
                model = timm.create_model(name, pretrained=False, num_classes=10, img_size=size)
            except TypeError:  # no img_size argument: the default size only
                if size != default:
                    continue
        x = torch.rand(2, 3, size, size)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.eval()(x)
        except (RuntimeError, ValueError, AssertionError, IndexError, TypeError):
            continue
        return model, x
    raise AssertionError(f"{name} accepts none of {SIZES}")


# Additive constants zeroed (class tokens are kept: CoaT's head reads a class token that
# nothing else would move from zero; they sit in attention models, which do not conserve).
_CONSTANTS = ("bias", "pos_embed", "pos_embedding", "relative_position_bias_table",
              "attention_biases")  # fmt: skip


def _prepare(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A trained model's scale (:func:`hudd_testkit.trained_scale.at_trained_scale`)."""

    def constant(name: str) -> bool:
        leaf = name.rsplit(".", 1)[-1]
        return leaf.endswith(_CONSTANTS) or leaf.startswith(("bias_ih", "bias_hh"))  # LSTM

    return at_trained_scale(model, x, constant)


def _conserving(lrp: LRP) -> bool:
    """Whether every rule in the graph conserves (no AttnLRP softmax rule, no attention
    block, no division of two relevance-carrying values)."""
    for op in lrp.graph.ops:
        if isinstance(op.rule, Softmax) and not op.rule.constant:
            return False
        if isinstance(op.rule, Traced) and not op.rule.constant_softmax:
            return False
        if isinstance(op.rule, Norm) and len(op.args) > 1 and "div" in str(op.target):
            return False
    return True


def _case(family: str):
    name = REPRESENTATIVES[family]
    if name in FAST:
        return pytest.param(name, id=family)
    return pytest.param(
        name,
        id=family,
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not os.environ.get("HUDD_ZOO"), reason="set HUDD_ZOO=1"),
        ],
    )


@pytest.mark.parametrize("name", [_case(f) for f in sorted(REPRESENTATIVES)])
def test_timm_model(name):
    torch.manual_seed(0)
    model, x = _smallest(name)
    model = _prepare(model, x)
    lrp = LRP(model)
    rel = lrp(x)
    assert rel.keys() == set(lrp.layers) and len(rel) > 3
    bad = [k for k, v in rel.items() if not bool(torch.isfinite(v).all())]
    assert not bad, f"{name}: non-finite relevance at {bad[:5]}"
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(lrp.forward(x), y, rtol=0, atol=1e-3 * float(y.abs().max()))
    logit = y.max(dim=1).values
    assert bool((rel["input"].abs().flatten(1).sum(1) > 0).all()), f"{name}: no relevance"
    ratio = rel["input"].flatten(1).sum(1) / logit
    if _conserving(lrp):
        assert bool(((ratio - 1).abs() < 0.01).all()), f"{name}: input/logit = {ratio.tolist()}"
    else:
        assert bool(((ratio > 0) & (ratio <= 2)).all()), f"{name}: input/logit = {ratio.tolist()}"


@pytest.mark.parametrize("name,layer", [("test_vit", "patch_embed.proj"),
                                        ("test_efficientnet", "conv_stem")])  # fmt: skip
def test_timm_model_by_name_from_the_command_line(tmp_path, model_workdir, name, layer):
    """``--model timm:NAME`` as ``torchvision.models:NAME``: the classes from the data, a
    fixed input size from the images, grey images as its 3 channels; the stored sidecar
    rebuilds it; heatmaps follow."""
    from hudd_core.cli import main
    from hudd_core.models.checkpoint import load_checkpoint, resolve_model

    ws = model_workdir({"TrainingSet": 6, "TestSet": 6}, name=name)
    spec = f"timm:{name}"
    _, meta = resolve_model(spec, None, ws.data)
    assert meta["kwargs"] == {"num_classes": 6, "input_size": 32} and meta["in_channels"] == 3
    torch.manual_seed(0)
    extra = {"img_size": 32} if name == "test_vit" else {}
    net = timm.create_model(name, pretrained=False, num_classes=6, **extra)
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    common = ["--data", str(ws.data), "--workdir", str(ws.root / "T2"), "--quiet"]
    assert main(["test", "--model", spec, "--weights", str(weights), *common]) == 0
    rebuilt, _ = load_checkpoint(ws.root / "T2" / "DNNModels" / "w.pt")
    s1, s2 = rebuilt.state_dict(), net.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert main(["heatmaps", "--layers", layer, "input", *common]) == 0
    with pytest.raises(ValueError, match="not a timm model"):
        resolve_model("timm:nope", None, ws.data)
