"""The demo model configs (configs/demo/*.py) are their full model configs
(configs/models/*.py) with only the sizes shrunk (configs/demo/_base_/demo_sizes.py)."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("L1", "L2", "L3", "P1")

#: the dotted keys a demo config may change in its full config ([*]: every
#: list item, *: every dict key); each one is a size, a count or a schedule
#: length, or the backbone type swapped for its small registered twin
SHRUNK = (
    "model.backbone.type",
    "model.backbone.depth",
    "model.backbone.base_channels",
    "model.backbone.groups",
    "model.backbone.frozen_stages",
    "model.neck.in_channels",
    "model.neck.out_channels",
    "model.rpn_head.in_channels",
    "model.rpn_head.feat_channels",
    "model.roi_head.bbox_roi_extractor.out_channels",
    "model.roi_head.mask_roi_extractor.out_channels",
    "model.roi_head.bbox_head[*].in_channels",
    "model.roi_head.bbox_head[*].fc_out_channels",
    "model.roi_head.mask_head.in_channels",
    "model.roi_head.mask_head.conv_out_channels",
    "model.train_cfg.rpn_proposal.nms_pre",
    "model.train_cfg.rpn_proposal.max_per_img",
    "model.train_cfg.rcnn[*].sampler.num",
    "model.test_cfg.rpn.nms_pre",
    "model.test_cfg.rpn.max_per_img",
    "train_scale_multiscale",
    "train_scale_single",
    "cutout_max_px",
    "cutout_hole_size",
    "train_pipelines.*[*].scale",
    "train_pipelines.*[*].scales",
    "train_pipelines.*[*].max_size",
    "train_pipelines.*[*].hole_size",
    "train_pipeline[*].scale",
    "train_dataloader.dataset.pipeline[*].scale",
    "test_pipeline[*].scale",
    "images_per_gpu",
    "base_images_per_iter",
    "base_lr",
    "warmup_iters",
    "checkpoint_interval",
    "train_dataloader.batch_size",
    "train_dataloader.num_workers",
    "train_dataloader.persistent_workers",
    "optim_wrapper.optimizer.lr",
    "param_scheduler[*].end",
    "default_hooks.logger.interval",
    "default_hooks.checkpoint.interval",
    "log_processor.window_size",
)
#: keys not every full config has (L2's backbone is a ResNet, without groups;
#: the cutout and the resize steps of the photometric pipelines differ)
NOT_EVERYWHERE = {
    "model.backbone.groups",
    "cutout_hole_size",
    "train_pipelines.*[*].scales",
    "train_pipelines.*[*].max_size",
    "train_pipelines.*[*].hole_size",
}


def flatten(node, prefix: str = "") -> dict:
    """Dotted key -> value; lists of dicts are entered ([i]), other lists and
    tuples (sizes, channel lists) are values."""
    if isinstance(node, dict):
        out: dict = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, (list, tuple)) and any(isinstance(v, dict) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: node}


def pattern_of(key: str) -> str | None:
    for pattern in SHRUNK:
        if fnmatch.fnmatchcase(key, pattern.replace("[*]", "[[]*[]]")):
            return pattern
    return None


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


def changed_keys(root: Path, model: str) -> dict:
    full = flatten(Config.fromfile(str(root / "models" / f"{model}.py")).to_dict())
    demo = flatten(Config.fromfile(str(root / "demo" / f"{model}.py")).to_dict())
    missing = _Absent()
    return {
        key: (full.get(key, missing), demo.get(key, missing))
        for key in full.keys() | demo.keys()
        if full.get(key, missing) != demo.get(key, missing)
    }


@pytest.mark.parametrize("model", MODELS)
def test_demo_config_differs_from_its_full_config_only_in_sizes(model):
    changed = changed_keys(CONFIGS, model)
    unexpected = {k: v for k, v in changed.items() if pattern_of(k) is None}
    assert not unexpected, f"demo/{model}.py changes more than sizes: {unexpected}"
    hit = {pattern_of(k) for k in changed}
    missed = set(SHRUNK) - NOT_EVERYWHERE - hit
    assert not missed, f"demo/{model}.py does not shrink {sorted(missed)}"
    if model != "L2":
        assert "model.backbone.groups" in hit


def test_demo_sizes():
    cfg = Config.fromfile(str(CONFIGS / "demo" / "P1.py"))
    assert cfg.model.backbone.type == "DemoResNeXt"
    assert (cfg.model.backbone.depth, cfg.model.backbone.groups) == (14, 4)
    assert cfg.model.roi_head.bbox_head[2].fc_out_channels == 256
    assert cfg.model.roi_head.bbox_head[2].num_classes == 23  # P1's, kept
    assert [s.sampler.num for s in cfg.model.train_cfg.rcnn] == [64, 64, 64]
    assert cfg.train_pipeline[2].scale == (256, 154)  # P1 stage 1: single scale
    assert cfg.train_pipelines.multiscale[2].scale == [(256, 123), (256, 184)]
    assert cfg.cutout_max_px == 12
    assert cfg.test_pipeline[1].scale == (256, 154)
    assert cfg.param_scheduler[0].end == 10
    assert "demo" not in cfg  # the helper key does not reach the config


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new))


def test_a_change_to_a_full_config_reaches_its_demo_twin(tmp_path):
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root)
    # the shared full base: a list item (box heads) and a dict (mask head)
    _replace(root / "_base_" / "cascade_mask_rcnn_fpn.py", "roi_feat_size=7", "roi_feat_size=5")
    _replace(root / "_base_" / "cascade_mask_rcnn_fpn.py", "num_convs=4", "num_convs=2")
    _replace(root / "_base_" / "oid_instance.py", "train_scale_single = (1333, 800)",
             "train_scale_single = (2666, 1600)")
    # one full model
    _replace(root / "models" / "L3.py", "stage_with_dcn=(False, False, False, True)",
             "stage_with_dcn=(False, False, True, True)")
    for model in MODELS:
        cfg = Config.fromfile(str(root / "demo" / f"{model}.py"))
        assert [h.roi_feat_size for h in cfg.model.roi_head.bbox_head] == [5, 5, 5]
        assert [h.fc_out_channels for h in cfg.model.roi_head.bbox_head] == [256] * 3
        assert cfg.model.roi_head.mask_head.num_convs == 2
        assert cfg.train_scale_single == (512, 307)
        assert cfg.train_pipelines.single[2].scale == (512, 307)
    demo_l3 = Config.fromfile(str(root / "demo" / "L3.py"))
    assert demo_l3.model.backbone.stage_with_dcn == (False, False, True, True)
    assert demo_l3.model.backbone.depth == 14
