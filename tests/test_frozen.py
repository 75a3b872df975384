"""train.cache_blocks: the frozen first blocks of an EfficientNet-Lite computed once, the rest trained."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from boneage.learning.inference import predict
from boneage.learning.models import build_model
from boneage.learning.spec import TrainSpec
from boneage.learning.trainer import Trainer, seed_everything

from .test_train import TINY, _subsets, data  # noqa: F401 (data: the tiny preprocessed set, a fixture)

# Trains or sums floats: CI runs this module a second time on PyTorch's default kernels and one thread
# (the floating-point guard in .ci/run), so that a result hanging on the last bits shows on any machine.
pytestmark = pytest.mark.arith

CACHED = {"arch": "efficientnet_lite0", "sex_input": True, "pretrained": "imagenet", **TINY, "epochs": 3,
          "lr": 0.01, "cache_blocks": 3, "cache_views": 2}


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite2"])
def test_the_trunk_then_the_rest_is_the_whole_network(arch):
    torch.manual_seed(0)
    model = build_model({"arch": arch, "sex_input": True}).eval()
    x, male = torch.rand(3, 1, 64, 64), torch.tensor([0.0, 1.0, 1.0])
    with torch.no_grad():
        whole = model(x, male)
        for n in (0, 3, 5):
            assert torch.allclose(model.from_trunk(model.trunk(x, n), male, n), whole, atol=1e-5)
    with pytest.raises(ValueError, match="resnet18.*EfficientNet-Lite only"):
        build_model({"arch": "resnet18"}).trunk(x, 1)


def test_cached_training_keeps_the_frozen_blocks_and_validates_as_evaluation_scores(data, tmp_path):  # noqa: F811
    spec = TrainSpec.from_dict(CACHED)
    seed_everything(spec.seed)  # as the trainer does before it builds the model
    start = build_model(asdict(spec)).state_dict()
    train, val = _subsets(data)
    result = Trainer("lite", spec, tmp_path, torch.device("cpu"), "h").fit(train, val)
    assert not list((tmp_path / "checkpoints").glob("frozen_*"))  # the cache does not outlive the training
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    frozen = ("backbone.net._conv_stem.", "backbone.net._bn0.", *(f"backbone.net._blocks.{i}." for i in range(3)))
    for name, value in state["model"].items():  # weights and BatchNorm statistics alike
        if name.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, start[name]) == name.startswith(frozen), name
    # the validation MAE the trainer selected by is what the whole network scores on the images
    model = build_model(asdict(spec))
    model.load_state_dict(state["model"])
    mean, std = state["target"]["mean"], state["target"]["std"]
    pred = predict(model, val.images, val.male, spec.input_size, mean, std, torch.device("cpu"))
    assert abs(np.abs(pred - val.boneage.numpy()).mean() - result["best"]["val_mae"]) < 1e-3


class _Interrupted(Exception):
    pass


class _StopsAfterOneEpoch(Trainer):
    def _report(self, bar, row, best, improved):
        super()._report(bar, row, best, improved)
        raise _Interrupted


def test_an_interrupted_cached_training_continues_as_if_it_had_not_stopped(data, tmp_path):  # noqa: F811
    spec = TrainSpec.from_dict(CACHED)
    train, val = _subsets(data)
    cpu = torch.device("cpu")
    Trainer("lite", spec, tmp_path / "whole", cpu, "h").fit(train, val)
    with pytest.raises(_Interrupted):
        _StopsAfterOneEpoch("lite", spec, tmp_path / "stopped", cpu, "h").fit(train, val)
    assert not list((tmp_path / "stopped" / "checkpoints").glob("frozen_*"))
    Trainer("lite", spec, tmp_path / "stopped", cpu, "h").fit(train, val)  # recomputes the same views
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in ("whole", "stopped"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_cached_training_on_the_gpu_path_bf16_trains(data, tmp_path):  # noqa: F811
    """The CUDA path, forced on the CPU: bf16 autocast over the trunk and the trained blocks."""
    spec = TrainSpec.from_dict({**CACHED, "arch": "efficientnet_lite2", "epochs": 2})
    result = Trainer("lite2", spec, tmp_path, torch.device("cpu"), "h", bf16=True).fit(*_subsets(data))
    assert all(np.isfinite(row["val_mae"]) for row in result["history"])


@pytest.mark.parametrize("bad,message", [({"arch": "resnet18"}, "resnet18 has no cached path"),
                                         ({"bn_recalibrate": True}, "not go with bn_recalibrate"),
                                         ({"compile": True}, "not go with compile")])
def test_settings_the_cache_cannot_serve_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainSpec.from_dict({**CACHED, **bad})


def test_a_cache_larger_than_the_free_disk_is_refused_before_it_is_written(tmp_path):
    from boneage.learning.frozen import FrozenOutputs

    with pytest.raises(OSError, match=r"needs 20000000\.0 GB in .*10000000 films x 1000 views.*cache_views"):
        FrozenOutputs(tmp_path / "frozen_train.npy", np.float16, 10**7, 1000, (40, 500, 50))  # 20 PB
    assert not (tmp_path / "frozen_train.npy").exists()
