"""Checkpoints are read weights-only: a pickle payload is refused, not run;
weights that do not fit the model are a clear error; our periodic
checkpoints and random state survive a weights-only round trip."""

from __future__ import annotations

import os
import pickle
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch

from oidseg.checkpoints import backbone_part, fit_state_dict, load_checkpoint, state_dict_of
from oidseg.errors import InputError


class Payload:
    """Unpickling this runs ``touch MARKER`` (os.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_payload(path, marker, *, legacy=False):
    obj = {"state_dict": {"w": torch.zeros(2)}, "meta": {"x": Payload(marker)}}
    if legacy:  # a plain pickle, not torch's zip format
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_payload_is_refused_not_run(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = write_payload(tmp_path / "evil.pth", marker, legacy=legacy)
    with pytest.raises(InputError, match=r"evil.pth: checkpoint holds more than tensors.*refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_inference_checkpoint_payload_is_refused(tmp_path):
    from oidseg.infer import load_checkpoint_file

    marker = tmp_path / "ran"
    path = write_payload(tmp_path / "evil.pth", marker)
    with pytest.raises(InputError, match="evil.pth: checkpoint holds more than tensors"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match="cut.pth: checkpoint is truncated or corrupt"):
        load_checkpoint(cut)
    with pytest.raises(InputError, match="nope.pth: checkpoint is missing"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(InputError, match="good.pth: x has no state_dict of tensors"):
        state_dict_of({"weights": 1}, good, kind="x")


def small_resnet():
    from mmdet.models.backbones import ResNet

    return ResNet(depth=18, base_channels=8, num_stages=4, out_indices=(3,))


@pytest.mark.parametrize("layout", ["bare", "state_dict", "backbone_prefix", "torchvision_fc"])
def test_pretrained_layouts_load_into_the_backbone(tmp_path, layout):
    torch.manual_seed(0)
    source = small_resnet().state_dict()
    state = OrderedDict(source)
    if layout == "state_dict":
        state = {"state_dict": state, "meta": {"arch": "resnet18"}}
    elif layout == "backbone_prefix":  # a detector or mmpretrain file
        state = {"state_dict": {**{f"backbone.{k}": v for k, v in source.items()},
                                "neck.conv.weight": torch.zeros(1), "head.fc.weight": torch.zeros(1)}}
    elif layout == "torchvision_fc":  # a classifier with its fc layer, old file without BN counters
        state = {**{k: v for k, v in source.items() if not k.endswith("num_batches_tracked")},
                 "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    target = small_resnet()
    fit_state_dict(target, backbone_part(state_dict_of(load_checkpoint(path), path)), path,
                   what="backbone", may_miss=(r"num_batches_tracked$",), may_extra=(r"^fc\.",))
    for key, value in target.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, source[key]), key


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    from mmdet.models.backbones import ResNet

    path = tmp_path / "resnet50.pth"
    torch.save(ResNet(depth=50, base_channels=8).state_dict(), path)
    state = state_dict_of(load_checkpoint(path), path)
    target = small_resnet()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(InputError) as err:
        fit_state_dict(target, state, path, what="the backbone of L1")
    message = str(err.value)
    assert message.startswith(f"{path}: weights do not fit the backbone of L1 (")
    assert "unexpected: layer1.0.conv3.weight" in message
    assert "shape mismatch: layer1.0.conv1.weight (8, 8, 1, 1) != (8, 8, 3, 3)" in message
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())

    partial = {k: v for k, v in small_resnet().state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(InputError, match=r"missing: layer4\.0\.conv1\.weight"):
        fit_state_dict(small_resnet(), partial, path, what="model")


def test_periodic_checkpoint_state_is_plain_and_round_trips(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub

    from oidseg.train_hooks import from_plain, rng_state, set_rng_state, to_plain

    hub = MessageHub.get_instance("test_checkpoints")
    for value in (0.5, 0.25, 0.125):
        hub.update_scalar("train/loss", value)
    hub.update_info("eta", np.float64(3.5))
    hub.update_info("iter", 7)
    saved = {"meta": {"iter": 7, "rng_states": [rng_state()], "dataset_meta": {"classes": ("a", "b")}},
             "message_hub": to_plain(hub.state_dict())}
    path = tmp_path / "iter_7.pth"
    torch.save(saved, path)
    loaded = torch.load(path, weights_only=True)  # torch's default allow-list only
    restored = from_plain(loaded["message_hub"])
    buffer = restored["log_scalars"]["train/loss"]
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.data[0].tolist() == [0.5, 0.25, 0.125]
    assert restored["runtime_info"]["eta"] == 3.5
    MessageHub.get_instance("test_checkpoints_2").load_state_dict(restored)

    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(loaded["meta"]["rng_states"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
