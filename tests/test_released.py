"""The original's released checkpoints (issue 10): the 2019 conventions, the
converter (oidseg/released.py, scripts/convert_released.py), the workflow
switch models.<M>.released, and mmdet's upgrade_model_version.py as a peer.

Fast tests use "shape-only" 2019 checkpoints: every tensor of a full-size
model with its real shape but a one-element storage (an expanded zero), so a
full-size layout costs kilobytes; the class rows and DCN offsets, which the
converter moves, get real random values. The slow tests build randomly
initialised full-size models and compare detections.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from oidseg import released as rel
from oidseg.errors import InputError, run_cli
from released2019 import randomize_, write_2019_checkpoint
from wf import REPO, job_counts, new_workdir, snakemake

ORIGINAL = json.loads((REPO / "configs/released/original_classes.json").read_text())
KIND = {"L1": "leaf", "L2": "leaf", "L3": "leaf", "P1": "parent"}
RELEASED_NAMES = {
    "L1": "aug_large_ms_lr_test_epoch_1_iter_76000.pth",
    "L2": "aug_large_lr15_dcn_mscale_balanced_rnd2_epoch_1_iter_12000.pth",
    "L3": "x101_dcn_gcp_lr50_ep1_it26000.pth",
    "P1": "parent_A_lr50_ep1_it8000.pth",
}


def ours(kind: str) -> list[str]:
    """A class order of ours that differs from the original's everywhere
    it can (a fixed shuffle)."""
    order = list(ORIGINAL[kind])
    rng = np.random.default_rng(7)
    return [order[i] for i in rng.permutation(len(order))]


def config_of(model: str) -> Path:
    return REPO / "configs/released" / f"{model}.py"


def classes_json(path: Path, kind: str, classes: list[str]) -> Path:
    path.write_text(json.dumps({f"{kind}_classes": classes}))
    return path


# ------------------------------------------------------------------ 2019 conventions


def test_legacy_anchors_reproduce_the_2019_generator():
    """2019 AnchorGenerator(base_size=stride, scales=[8], ratios=[.5, 1, 2]):
    centre 0.5 * (w - 1), corners ctr -+ 0.5 * (ws - 1), rounded; shifted by
    the stride, row-major. Worked by hand for strides 4 and 16."""
    from mmdet.models.task_modules.prior_generators import AnchorGenerator, LegacyAnchorGenerator

    gen = LegacyAnchorGenerator(strides=[4, 16], ratios=[0.5, 1.0, 2.0], scales=[8], center_offset=0.5)
    # stride 4: ctr 1.5; ratio 0.5: ws = 4 * sqrt(2) * 8 = 45.25, hs = 22.63
    #   -> [1.5 - 22.13, 1.5 - 10.81, 1.5 + 22.13, 1.5 + 10.81] rounded
    # ratio 1: ws = hs = 32 -> [1.5 - 15.5, ..., 1.5 + 15.5] = [-14, -14, 17, 17]
    expected4 = torch.tensor([[-21.0, -9.0, 24.0, 12.0], [-14.0, -14.0, 17.0, 17.0], [-9.0, -21.0, 12.0, 24.0]])
    # stride 16: ctr 7.5; ratio 1: ws = 128 -> [7.5 - 63.5, ..., 7.5 + 63.5]
    expected16_ratio1 = torch.tensor([-56.0, -56.0, 71.0, 71.0])
    anchors4, anchors16 = gen.grid_priors([(2, 2), (1, 1)], device="cpu")
    assert torch.equal(anchors4[:3], expected4)
    assert torch.equal(anchors16[1], expected16_ratio1)
    # row-major: location (y=0, x=1) then (y=1, x=0), shifted by the stride
    assert torch.equal(anchors4[3:6], expected4 + torch.tensor([4.0, 0, 4, 0]))
    assert torch.equal(anchors4[6:9], expected4 + torch.tensor([0, 4.0, 0, 4]))
    # mmdet 3's own generator is another convention (the test can fail)
    modern = AnchorGenerator(strides=[4], ratios=[1.0], scales=[8]).grid_priors([(1, 1)], device="cpu")[0]
    assert not torch.equal(modern[0], expected4[1])


def test_v1_coder_reproduces_2019_delta2bbox_and_bbox2delta():
    """2019 delta2bbox by hand: roi [0, 0, 9, 9] (w = h = 10 with +1, centre
    4.5); deltas (0.1, -0.2, log 2, 0): gx = 5.5, gw = 20 -> x1 = 5.5 - 10 +
    0.5 = -4, x2 = 5.5 + 10 - 0.5 = 15; gy = 2.5, gh = 10 -> y1 = -2, y2 = 7."""
    from mmdet.models.task_modules.coders import LegacyDeltaXYWHBBoxCoder

    from oidseg.mmdet_ext.legacy import V1DeltaXYWHBBoxCoder

    stds = [0.1, 0.1, 0.2, 0.2]
    coder = V1DeltaXYWHBBoxCoder(target_means=[0.0] * 4, target_stds=stds)
    roi = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 9.0]])
    deltas = torch.tensor([[0.1, -0.2, math.log(2.0), 0.0], [0.0, 0.0, 0.0, 0.0]]) / torch.tensor(stds)
    expected = torch.tensor([[-4.0, -2.0, 15.0, 7.0], [0.0, 0.0, 9.0, 9.0]])
    assert torch.allclose(coder.decode(roi, deltas), expected, atol=1e-5)
    # clipped to the image (h 8, w 12) at size - 1, as 2019
    assert torch.allclose(coder.decode(roi, deltas, max_shape=(8, 12))[0], torch.tensor([0.0, 0.0, 11.0, 7.0]))
    # bbox2delta (encode) is the exact inverse
    assert torch.allclose(coder.encode(roi[:1], expected[:1]), deltas[:1], atol=1e-5)
    # mmdet 3.3's LegacyDeltaXYWHBBoxCoder leaves out the +-0.5: one pixel wider
    mmdet_legacy = LegacyDeltaXYWHBBoxCoder(target_means=[0.0] * 4, target_stds=stds)
    assert torch.allclose(mmdet_legacy.decode(roi, deltas), expected + torch.tensor([-0.5, -0.5, 0.5, 0.5]), atol=1e-5)
    assert torch.allclose(mmdet_legacy.encode(roi[:1], expected[:1]), deltas[:1], atol=1e-5)


def test_v1_roi_extractor_uses_the_2019_plus_one_sizes():
    from mmcv.ops import RoIAlign
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    from oidseg.mmdet_ext.legacy import V1RoIExtractor

    cfg = dict(roi_layer=dict(type="RoIAlign", output_size=1, sampling_ratio=1, aligned=False),
               out_channels=1, featmap_strides=[4, 8, 16, 32])
    v1, modern = V1RoIExtractor(**cfg), SingleRoIExtractor(**cfg)
    # 2019: sqrt((111 + 1) * (111 + 1)) / 56 = 2 -> level 1; without +1: level 0
    rois = torch.tensor([[0.0, 0.0, 0.0, 111.0, 111.0]])
    assert v1.map_roi_levels(rois, 4).tolist() == [1]
    assert modern.map_roi_levels(rois, 4).tolist() == [0]
    # the 2019 kernel pools [x1, x2 + 1): on a feature equal to its x
    # coordinate, one bin with one sample reads the centre (0 + 4) / 2 = 2
    feat = torch.arange(8.0).repeat(8, 1)[None, None]
    roi = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    assert v1.roi_layers[0].output_size == (1, 1)
    v1_layer = V1RoIExtractor(**{**cfg, "featmap_strides": [1]}).roi_layers[0]
    assert v1_layer(feat, roi).item() == pytest.approx(2.0)
    assert RoIAlign(1, 1.0, 1, aligned=False)(feat, roi).item() == pytest.approx(1.5)


def test_ensemble_flips_legacy_boxes_as_2019():
    """2019 bbox_flip: x1' = W - x2 - 1; mmdet 3: W - x2. The ensemble picks
    the convention from the detector's box coder."""
    from oidseg.infer import build_model_from_config
    from oidseg.mmdet_ext.ensemble import AugFrame
    from oidseg.mmdet_ext.legacy import uses_v1_boxes

    box = torch.tensor([[10.0, 5.0, 19.0, 8.0]])
    legacy = AugFrame((1.0, 1.0), (50, 100), True, flip_offset=1.0)
    modern = AugFrame((1.0, 1.0), (50, 100), True)
    assert legacy.to_frame(box).tolist() == [[80.0, 5.0, 89.0, 8.0]]
    assert modern.to_frame(box).tolist() == [[81.0, 5.0, 90.0, 8.0]]
    assert torch.equal(legacy.from_frame(legacy.to_frame(box)), box)
    with torch.device("meta"):
        assert uses_v1_boxes(build_model_from_config(config_of("P1"), 23))
        assert not uses_v1_boxes(build_model_from_config(REPO / "configs/models/P1.py", 23))


def test_v1_mask_paste_is_the_2019_get_seg_masks():
    """2019: box [2.7, 3.2, 11.9, 8.8] -> int [2, 3, 11, 8], w = 10, h = 6,
    the map resized into rows 3..8, columns 2..11, thresholded with '>'."""
    from pycocotools import mask as mask_util

    from oidseg.mmdet_ext.ensemble import paste_masks_rle
    from oidseg.mmdet_ext.legacy import paste_masks_rle_v1

    def decode(counts):
        return mask_util.decode({"size": [12, 16], "counts": counts}).astype(bool)

    box = torch.tensor([[2.7, 3.2, 11.9, 8.8]])
    expected = np.zeros((12, 16), bool)
    expected[3:9, 2:12] = True
    (mask,) = paste_masks_rle_v1(torch.full((1, 28, 28), 0.9), box, 12, 16, 0.5)
    assert np.array_equal(decode(mask), expected)
    (at_thr,) = paste_masks_rle_v1(torch.full((1, 28, 28), 0.5), box, 12, 16, 0.5)
    assert not decode(at_thr).any()  # '>' as 2019; mmdet 3 uses '>='
    (modern,) = paste_masks_rle(torch.full((1, 28, 28), 0.9), box, 12, 16, 0.5)
    assert not np.array_equal(decode(modern), expected)


# ----------------------------------------------------------------------- converter


def test_hand_made_state_is_renamed_and_permuted():
    src = ["b", "c", "a"]  # the checkpoint's order
    dst = ["a", "b", "c"]  # ours
    perm = rel.class_permutation(src, dst, "x.pth")
    assert perm.tolist() == [2, 0, 1]
    state = {
        # rows: background, b, c, a
        "bbox_head.1.fc_cls.weight": torch.tensor([[0.0], [1.0], [2.0], [3.0]]),
        "bbox_head.1.fc_cls.bias": torch.tensor([10.0, 11.0, 12.0, 13.0]),
        "mask_head.2.conv_logits.bias": torch.tensor([20.0, 21.0, 22.0, 23.0]),
        "backbone.layer3.5.conv2_offset.weight": torch.ones(1),
        "backbone.layer3.5.conv2.weight": torch.zeros(1),
        "rpn_head.rpn_cls.bias": torch.tensor([1.0, 2.0, 3.0]),
    }
    out = rel.convert_state_dict(state, perm, "x.pth")
    assert out["roi_head.bbox_head.1.fc_cls.weight"].flatten().tolist() == [3.0, 1.0, 2.0, 0.0]  # a b c bg
    assert out["roi_head.bbox_head.1.fc_cls.bias"].tolist() == [13.0, 11.0, 12.0, 10.0]
    assert out["roi_head.mask_head.2.conv_logits.bias"].tolist() == [23.0, 21.0, 22.0]
    assert "backbone.layer3.5.conv2.conv_offset.weight" in out and "backbone.layer3.5.conv2.weight" in out
    assert out["rpn_head.rpn_cls.bias"].tolist() == [1.0, 2.0, 3.0]  # sigmoid RPN: no background
    with pytest.raises(InputError, match="x.pth: .*repeats"):
        rel.class_permutation(["a", "a", "b"], dst, "x.pth")


_META_STATE: dict[str, dict] = {}


def meta_state(model: str) -> dict:
    """Shapes of our full-size model (meta device, no memory)."""
    if model not in _META_STATE:
        _META_STATE[model] = rel.expected_state(config_of(model), len(ORIGINAL[KIND[model]]))
    return _META_STATE[model]


def shape_only_state(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Our full-size model's state dict: expanded zeros, but random class
    rows and DCN offsets (the tensors the converter moves)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in meta_state(model).items():
        if re.search(r"(fc_cls|conv_logits|conv_offset)\.(weight|bias)$", key):
            state[key] = torch.randn(shape, generator=gen)
        else:
            state[key] = torch.zeros((), dtype=dtype).expand(shape)
    return state


def write_shape_only(tmp_path: Path, model: str, *, classes=None, with_classes=True, name=None) -> tuple[Path, dict]:
    kind = KIND[model]
    state = shape_only_state(model)
    path = write_2019_checkpoint(tmp_path / (name or RELEASED_NAMES[model]), state, model, ours(kind),
                                 ORIGINAL[kind], with_classes=with_classes, meta_classes=classes)
    return path, state


def convert_cli(tmp_path: Path, released: Path, model: str, kind: str | None = None, out: Path | None = None) -> tuple[int, Path]:
    from scripts_convert import main

    kind = kind or KIND[model]
    out = out or tmp_path / f"{model}_converted.pth"
    cj = classes_json(tmp_path / "classes.json", kind, ours(kind))
    rc = run_cli(main, ["--released", str(released), "--config", str(config_of(model)),
                        "--classes-json", str(cj), "--kind", kind, "--out", str(out)])
    return rc, out


@pytest.fixture(autouse=True)
def _script_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("scripts_convert", REPO / "scripts/convert_released.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(__import__("sys").modules, "scripts_convert", module)


@pytest.mark.parametrize("model", ["L3", "P1"])
def test_shape_only_round_trip_restores_every_tensor(tmp_path, model):
    """Ours -> 2019 layout (original class order, background first, 276
    mask channels, conv2_offset) -> converter -> exactly our tensors, every
    key of the model, meta.dataset_meta.classes in our order."""
    path, state = write_shape_only(tmp_path, model)
    rc, out = convert_cli(tmp_path, path, model)
    assert rc == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["dataset_meta"]["classes"] == ours(KIND[model])
    assert ckpt["meta"]["released"]["classes_from"] == "meta.CLASSES"
    assert list(ckpt["state_dict"]) == list(meta_state(model))
    for key, value in state.items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    if model == "L3":
        assert sum("conv2.conv_offset" in k for k in ckpt["state_dict"]) == 2 * 3  # c5: 3 blocks


def test_missing_meta_classes_falls_back_to_the_original_order(tmp_path):
    path, state = write_shape_only(tmp_path, "P1", with_classes=False)
    rc, out = convert_cli(tmp_path, path, "P1")
    assert rc == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["released"]["classes_from"].endswith("original_classes.json")
    assert torch.equal(ckpt["state_dict"]["roi_head.bbox_head.2.fc_cls.bias"], state["roi_head.bbox_head.2.fc_cls.bias"])


def test_missing_bn_counters_are_filled(tmp_path):
    """A file without BatchNorm's num_batches_tracked (not used at test
    time) still loads strictly: the counters are written as 0."""
    state = {k: v for k, v in shape_only_state("P1").items() if not k.endswith("num_batches_tracked")}
    path = write_2019_checkpoint(tmp_path / "p.pth", state, "P1", ours("parent"), ORIGINAL["parent"])
    rc, out = convert_cli(tmp_path, path, "P1")
    assert rc == 0
    sd = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert sd["backbone.bn1.num_batches_tracked"].item() == 0


def test_truncated_file_is_refused(tmp_path, capsys):
    path, _ = write_shape_only(tmp_path, "L1")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rc, out = convert_cli(tmp_path, path, "L1")
    assert rc == 2 and not out.exists() and not list(out.parent.glob(".*.tmp"))
    assert f"{path}: released checkpoint is truncated" in capsys.readouterr().err


@pytest.mark.parametrize(
    "file_model, config_model, what",
    [
        ("L2", "L1", r"unknown keys \['backbone\.layer2\.0\.conv2\.conv_offset"),  # r101 + DCN c3-c5 into x101
        ("L1", "L3", r"missing keys \['backbone\.layer4\.0\.conv2\.conv_offset"),  # x101 into x101 + DCN c5
    ],
)
def test_another_architecture_is_refused(tmp_path, capsys, file_model, config_model, what):
    path, _ = write_shape_only(tmp_path, file_model)
    rc, out = convert_cli(tmp_path, path, config_model)
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert f"{path}: weights do not fit" in err and re.search(what, err), err


def test_tiny_architecture_is_refused_with_shapes(tmp_path, capsys):
    """Same key names, other widths: the shape mismatches are named."""
    from tiny_model import tiny_cascade_config

    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    tiny = MODELS.build(tiny_cascade_config(len(ORIGINAL["parent"])).model)
    path = write_2019_checkpoint(tmp_path / "tiny.pth", tiny.state_dict(), "P1", ours("parent"), ORIGINAL["parent"])
    rc, out = convert_cli(tmp_path, path, "P1")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "shape mismatches ['backbone.conv1.weight (16, 3, 7, 7) != (64, 3, 7, 7)'" in err, err


def test_wrong_class_set_is_refused(tmp_path, capsys):
    wrong = list(ORIGINAL["leaf"])
    wrong[5] = "/m/not_a_class"
    path, _ = write_shape_only(tmp_path, "L1", classes=wrong)
    rc, out = convert_cli(tmp_path, path, "L1")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "classes are not the model's 275 classes" in err and "/m/not_a_class" in err
    assert ORIGINAL["leaf"][5] in err
    # the parent model's file given for a leaf model
    path, _ = write_shape_only(tmp_path, "P1")
    rc, _ = convert_cli(tmp_path, path, "L1", kind="leaf")
    assert rc == 2 and "checkpoint's 23 classes are not the model's 275 classes" in capsys.readouterr().err


def test_our_own_checkpoint_is_not_a_released_file(tmp_path, capsys):
    path = tmp_path / "ours.pth"
    torch.save({"meta": {"dataset_meta": {"classes": ["a"]}},
                "state_dict": {"roi_head.bbox_head.0.fc_cls.weight": torch.zeros(2, 1)}}, path)
    rc, out = convert_cli(tmp_path, path, "P1")
    assert rc == 2 and not out.exists()
    assert "not a 2019 Cascade R-CNN checkpoint" in capsys.readouterr().err


def test_pickled_code_is_not_loaded(tmp_path, capsys):
    """weights_only=True: a file with pickled objects (not plain types) is refused."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"bbox_head.0.fc_cls.weight": torch.zeros(1)}, "meta": {"x": Path("/")}}, path)
    rc, _ = convert_cli(tmp_path, path, "P1")
    assert rc == 2 and f"{path}: released checkpoint holds more than tensors and plain data" in capsys.readouterr().err


# ------------------------------------------------------------------------ workflow


def _released_workdir(tmp_path: Path) -> Path:
    workdir = new_workdir(tmp_path, "openimages.yaml", "released.yaml")
    shutil.copytree(REPO / "configs", workdir / "configs")
    (workdir / "data/openimages").mkdir(parents=True)
    (workdir / "data/openimages/sample_submission.csv").write_text("ImageID,ImageWidth,ImageHeight,PredictionString\n")
    (workdir / "data/released").mkdir(parents=True)
    for name in RELEASED_NAMES.values():
        (workdir / "data/released" / name).write_bytes(b"released")
    return workdir


def test_released_config_dry_run_has_no_training(tmp_path):
    workdir = _released_workdir(tmp_path)
    proc = snakemake("-n", "-p", "--cores", "2", "--configfile", "openimages.yaml", "released.yaml", cwd=workdir)
    counts = job_counts(proc.stdout)
    assert counts["convert_released"] == 4
    assert counts["infer"] == 56
    assert counts["annotation_classes"] == 1 and counts["test_shards"] == 1 and counts["val_images"] == 1
    assert counts["merge"] > 0 and counts["combine"] == 2 and counts["score"] == 9
    assert "train" not in counts and "train_sets" not in counts and "build_list" not in counts
    for model, name in RELEASED_NAMES.items():
        config = os.path.relpath(REPO / "configs" / "released" / f"{model}.py", workdir)
        assert f"--released data/released/{name} --config {config}" in proc.stdout
        assert f"results/models/{model}/released.pth" in proc.stdout
    assert "--kind parent --out results/models/P1/released.pth" in proc.stdout


def test_checkpoint_and_released_together_are_refused(tmp_path):
    workdir = _released_workdir(tmp_path)
    (workdir / "both.yaml").write_text("models:\n  L1:\n    checkpoint: x.pth\n")
    proc = snakemake("-n", "--cores", "2", "--configfile", "openimages.yaml", "released.yaml", "both.yaml",
                     cwd=workdir, check=False)
    assert proc.returncode != 0 and "models.L1: set either 'checkpoint'" in proc.stdout + proc.stderr


# ------------------------------------------------- full-size models (slow)

_FULL: dict[str, dict] = {}
# the smallest size at which c5 (stride 32) keeps 3 x 3 for the DCN kernel
IMAGE = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)


def full_model(model: str, tmp_path_factory) -> dict:
    """A randomly initialised full-size model (configs/released/<M>.py), its
    2019-layout file (legacy serialization) and its detections on IMAGE.
    One model is kept at a time."""
    if model not in _FULL:
        _FULL.clear()
        from oidseg.infer import build_model_from_config

        kind = KIND[model]
        torch.manual_seed(0)
        det = randomize_(build_model_from_config(config_of(model), len(ORIGINAL[kind])))
        tmp = tmp_path_factory.mktemp(f"full_{model}")
        path = write_2019_checkpoint(tmp / RELEASED_NAMES[model], det.state_dict(), model, ours(kind), ORIGINAL[kind])
        _FULL[model] = dict(model=det, path=path, tmp=tmp, reference=detect(det))
    return _FULL[model]


def detect(det, flips=(False,)) -> dict:
    from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA

    ens = OIDEnsembleTTA([det], scales=[(128, 96)], flips=flips, max_per_img=20, rpn_max=100).eval()
    return ens.predict_image(IMAGE)


def same_detections(a: dict, b: dict) -> bool:
    return (len(a["labels"]) == len(b["labels"]) and np.array_equal(a["labels"], b["labels"])
            and np.allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-7)
            and np.allclose(a["bboxes"], b["bboxes"], atol=1e-3) and a["masks"] == b["masks"])


def load_into_blank(det, state) -> torch.nn.Module:
    """A copy of ``det`` with every float tensor NaN, loaded strictly."""
    blank = copy.deepcopy(det)
    with torch.no_grad():
        for value in blank.state_dict().values():
            if value.is_floating_point():
                value.fill_(float("nan"))
    blank.load_state_dict(state, strict=True)
    return blank


def _upgrade_model_version():
    import mmdet

    path = Path(mmdet.__file__).parent / ".mim/tools/model_converters/upgrade_model_version.py"
    spec = importlib.util.spec_from_file_location("upgrade_model_version", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_mmdet_upgrade_model_version_as_a_peer(tmp_path_factory):
    """mmdet's converter on the same synthetic L2 file (DCN in c3-c5), against
    ours without the class permutation (the peer keeps the file's order).
    Equal everywhere but at three kinds of tensors, where the 2019 code says
    ours is right:

    1. ``*.conv2_offset.*``: the peer keeps the 2019 name; mmcv 2's
       DeformConv2dPack owns its offset conv as ``conv2.conv_offset`` (2019
       backbones/resnet.py: ``self.conv2_offset`` beside ``self.conv2``), so
       the peer's file does not load strictly;
    2. ``rpn_head.rpn_cls.bias`` (1-D, 3 values): the peer rotates it as if
       the RPN were a 2-class softmax with the background first (its
       mmdet < 2.5 upgrade) but leaves the weight as is; the 2019 RPNHead is
       sigmoid (use_sigmoid=True: 3 outputs = 3 anchors, no background), so
       the bias must stay;
    3. ``roi_head.mask_head.{i}.conv_logits.bias`` (1-D, 276 values): the peer
       keeps the first 275 (background channel 0 kept, the last class
       dropped) while it drops channel 0 of the weight; 2019
       fcn_mask_head.get_seg_masks reads channel label + 1, so channel 0 of
       the bias must go as for the weight.
    """
    full = full_model("L2", tmp_path_factory)
    out = full["tmp"] / "peer.pth"
    _upgrade_model_version().convert(str(full["path"]), str(out), 276)
    peer = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    released = rel.load_released(full["path"])
    identity = np.arange(275)
    mine = rel.convert_state_dict(released.state_dict, identity, "l2")

    def canon(key: str) -> str:
        return re.sub(r"\.conv2_offset\.", ".conv2.conv_offset.", key)

    assert sorted(map(canon, peer)) == sorted(mine)
    renamed = [k for k in peer if k not in mine]
    assert len(renamed) == 2 * (4 + 23 + 3) and all(".conv2_offset." in k for k in renamed)
    differ = sorted(k for k in peer if not torch.equal(peer[k], mine[canon(k)]))
    expected = ["roi_head.mask_head.%d.conv_logits.bias" % i for i in range(3)] + ["rpn_head.rpn_cls.bias"]
    assert differ == expected
    original = released.state_dict
    assert torch.equal(peer["rpn_head.rpn_cls.bias"], original["rpn_head.rpn_cls.bias"].roll(-1))
    assert torch.equal(mine["rpn_head.rpn_cls.bias"], original["rpn_head.rpn_cls.bias"])
    assert torch.equal(peer["roi_head.mask_head.0.conv_logits.bias"], original["mask_head.0.conv_logits.bias"][:275])
    assert torch.equal(mine["roi_head.mask_head.0.conv_logits.bias"], original["mask_head.0.conv_logits.bias"][1:])
    # the peer's file does not load into the model (offset names)
    with pytest.raises(RuntimeError, match="conv2_offset"):
        load_into_blank(full["model"], peer)


@pytest.mark.slow
def test_round_trip_check_catches_wrong_conversions(tmp_path_factory):
    """The round-trip comparison fails for a wrong class permutation, a
    background left first, or a 2019 offset name."""
    full = full_model("L2", tmp_path_factory)
    out = full["tmp"] / "converted.pth"
    classes = ours("leaf")
    rel.convert_released(full["path"], out, config_of("L2"), classes, "leaf")
    good = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    reference = full["reference"]
    assert same_detections(detect(load_into_blank(full["model"], good)), reference)

    cls_keys = [k for k in good if re.search(r"(fc_cls|conv_logits)\.(weight|bias)$", k)]
    # a wrong permutation: the file's own order taken for ours
    wrong = dict(good)
    identity = rel.convert_state_dict(rel.load_released(full["path"]).state_dict, np.arange(275), "l2")
    wrong.update({k: identity[k] for k in cls_keys})
    assert not same_detections(detect(load_into_blank(full["model"], wrong)), reference)
    # the background left at index 0
    wrong = dict(good)
    wrong.update({k: good[k].roll(1, 0) for k in cls_keys if ".fc_cls." in k})
    assert not same_detections(detect(load_into_blank(full["model"], wrong)), reference)
    # the 2019 offset name kept
    wrong = {re.sub(r"\.conv2\.conv_offset\.", ".conv2_offset.", k): v for k, v in good.items()}
    with pytest.raises(RuntimeError, match="conv2_offset"):
        load_into_blank(full["model"], wrong)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["L2", "L1", "L3", "P1"])
def test_round_trip_gives_the_same_detections(tmp_path_factory, model):
    """A randomly initialised full-size model -> its weights in the exact
    2019 layout, classes in the original's order -> scripts/convert_released.py
    -> strict load -> the same detections (boxes, scores, labels, masks)
    on a test image."""
    from scripts_convert import main

    full = full_model(model, tmp_path_factory)
    kind = KIND[model]
    cj = classes_json(full["tmp"] / "classes.json", kind, ours(kind))
    out = full["tmp"] / "converted.pth"
    assert run_cli(main, ["--released", str(full["path"]), "--config", str(config_of(model)),
                          "--classes-json", str(cj), "--kind", kind, "--out", str(out)]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["dataset_meta"]["classes"] == ours(kind)
    converted = detect(load_into_blank(full["model"], ckpt["state_dict"]))
    assert len(full["reference"]["labels"]) > 0
    assert same_detections(converted, full["reference"])
