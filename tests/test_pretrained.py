"""Stage 1 of the full run starts from ImageNet backbones (issue 11, item 3):
configs/run/openimages.yaml names the original's weights, which resolve to
mmengine's Pretrained initialiser of each model's backbone; nothing is
downloaded here (the model is not initialised), and the demo stays offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from oidseg.errors import InputError
from oidseg.mmdet_ext.dataset import make_synthetic_dataset
from oidseg.train import build_config, build_parser, check_args, is_weights_name, pretrained_init_cfg

ROOT = Path(__file__).resolve().parents[1]
RESNEXT = "open-mmlab://resnext101_64x4d"
# the original's modelzoo://resnet101 = torchvision's ImageNet ResNet-101
RESNET101_URL = "https://download.pytorch.org/models/resnet101-63fe2227.pth"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_synthetic_dataset(str(root), n_images=1, n_classes=3, seed=0, size_range=(64, 64))
    (root / "order.npy").write_bytes(b"")  # only its existence is checked here
    return root


def stage_args(data, tmp, config, pretrained, load_from="none"):
    return build_parser().parse_args([
        "--config", str(ROOT / config), "--ann", str(data / "ann.pkl"),
        "--order", str(data / "order.npy"), "--iters", "10", "--work-dir", str(tmp / "w"),
        "--out", str(tmp / "o.pth"), "--log-jsonl", str(tmp / "l.jsonl"),
        "--pretrained", pretrained, "--load-from", load_from])


def run_models():
    return yaml.safe_load((ROOT / "configs" / "run" / "openimages.yaml").read_text())["models"]


def test_full_run_names_the_original_imagenet_weights():
    models = run_models()
    assert {m: models[m].get("pretrained") for m in models} == {
        "L1": RESNEXT, "L2": "torchvision://resnet101", "L3": RESNEXT, "P1": RESNEXT}
    # the demo (config.yaml) stays offline: random init
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]
    assert all(m.get("pretrained") is None for m in demo.values())


def test_names_are_mmengines_own():
    from mmengine.runner.checkpoint import get_external_models

    assert get_external_models()["resnext101_64x4d"].startswith("https://download.openmmlab.com/")
    expected = "torchvision://resnet101" if importlib.util.find_spec("torchvision") else RESNET101_URL
    assert pretrained_init_cfg("torchvision://resnet101") == dict(type="Pretrained", checkpoint=expected)
    assert pretrained_init_cfg("modelzoo://resnet101")["checkpoint"] in (expected, "modelzoo://resnet101")
    if not importlib.util.find_spec("torchvision"):
        with pytest.raises(InputError, match="torchvision://resnet7: no such torchvision model"):
            pretrained_init_cfg("torchvision://resnet7")


@pytest.mark.parametrize("model", ["L1", "L2", "L3", "P1"])
def test_stage1_resolves_to_the_backbone_init(model, data, tmp_path):
    spec = run_models()[model]
    args = stage_args(data, tmp_path, spec["config"], spec["pretrained"])
    check_args(args)  # a name is not a missing file
    cfg = build_config(args, world_size=4)
    init = cfg.model.backbone.init_cfg
    assert init["type"] == "Pretrained"
    if model == "L2":
        assert cfg.model.backbone.type == "ResNet" and cfg.model.backbone.depth == 101
        assert init["checkpoint"] in ("torchvision://resnet101", RESNET101_URL)
    else:
        assert cfg.model.backbone.type == "ResNeXt" and cfg.model.backbone.groups == 64
        assert init["checkpoint"] == RESNEXT
    # later stages start from the previous stage: no ImageNet init
    prev = tmp_path / "prev.pth"
    prev.write_bytes(b"x")
    later = build_config(stage_args(data, tmp_path, spec["config"], spec["pretrained"], str(prev)), 4)
    assert later.model.backbone.get("init_cfg") is None


def test_local_paths_stay_files(data, tmp_path):
    assert is_weights_name(RESNEXT) and not is_weights_name(str(tmp_path / "r.pth"))
    args = stage_args(data, tmp_path, "configs/models/L1.py", str(tmp_path / "missing.pth"))
    with pytest.raises(InputError, match="missing.pth: --pretrained checkpoint is missing"):
        check_args(args)
    # a local file is loaded strictly by the stage (LoadWeightsHook), not by mmengine's init
    (tmp_path / "r.pth").write_bytes(b"x")
    cfg = build_config(stage_args(data, tmp_path, "configs/models/L1.py", str(tmp_path / "r.pth")), 1)
    assert cfg.model.backbone.get("init_cfg") is None
