"""Model variants: shapes, the sex input, and every way weights come in."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from boneage.models import ARCHS, BoneAgeNet, PretrainedWeightsError, build_model, lite0_package_weights


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_with_and_without_sex(arch):
    for sex in (False, True):
        model = build_model({"arch": arch, "sex_input": sex, "head_hidden": 16 if sex else 0}).eval()
        with torch.no_grad():
            out = model(torch.rand(3, 1, 64, 64), torch.tensor([0.0, 1.0, 1.0]))
        assert out.shape == (3,)


def test_sex_input_changes_the_output_and_is_required():
    torch.manual_seed(0)
    model = build_model({"arch": "resnet18", "sex_input": True, "head_hidden": 16}).eval()
    for m in model.head:  # give the head a real dependence on its inputs
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight)
    x = torch.rand(1, 1, 64, 64).repeat(2, 1, 1, 1)
    with torch.no_grad():
        out = model(x, torch.tensor([0.0, 1.0]))
    assert out[0] != out[1]
    with pytest.raises(ValueError, match="needs the sex"):
        model(x)


def _fake_imagenet(arch):
    return getattr(torchvision.models, arch)(weights=None).state_dict()


def test_imagenet_weights_load_through_torchvision(monkeypatch):
    state = _fake_imagenet("resnet18")
    calls = []

    def fake_download(url, *args, **kwargs):  # the network boundary
        calls.append(url)
        return state

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    model = build_model({"arch": "resnet18_cbam", "pretrained": "imagenet"})
    assert calls and calls[0].startswith("https://download.pytorch.org/")
    folded = state["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(model.backbone.conv1.weight, folded)  # RGB stem folded to grey
    assert torch.equal(model.backbone.layer4[0][0].conv1.weight, state["layer4.0.conv1.weight"])


def test_imagenet_without_network_is_a_clear_error(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match=r"densenet121.*pretrained: PATH.*pretrained: none"):
        build_model({"arch": "densenet121", "pretrained": "imagenet"})


def test_efficientnet_lite0_imagenet_weights_come_from_the_package():
    state = torch.load(lite0_package_weights(), map_location="cpu", weights_only=True)
    model = build_model({"arch": "efficientnet_lite0", "pretrained": "imagenet"})
    net = model.backbone.net
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(net._blocks[7]._depthwise_conv.weight, state["_blocks.7._depthwise_conv.weight"])


def test_weights_from_a_path(tmp_path):
    source = build_model({"arch": "resnet34_cbam", "sex_input": True, "head_hidden": 8})
    whole = tmp_path / "whole.pt"
    torch.save(source.state_dict(), whole)
    loaded = build_model({"arch": "resnet34_cbam", "sex_input": True, "head_hidden": 8, "pretrained": str(whole)})
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))

    tv = tmp_path / "torchvision_resnet50.pth"  # a backbone file as torchvision publishes it
    state = _fake_imagenet("resnet50")
    torch.save(state, tv)
    model = build_model({"arch": "resnet50", "pretrained": str(tv)})
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))

    with pytest.raises(PretrainedWeightsError, match="does not fit arch densenet121"):
        build_model({"arch": "densenet121", "pretrained": str(tv)})
    with pytest.raises(PretrainedWeightsError, match="not found"):
        build_model({"arch": "resnet18", "pretrained": str(tmp_path / "nope.pt")})


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="unknown arch 'vgg16'"):
        BoneAgeNet("vgg16")
