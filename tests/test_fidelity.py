"""Fidelity to the original's configs (issue 12).

Item 5: L2's later stages train on the V5-test-oversampled list, as the original's ``cascade_mask_rcnn_dconv_c3-c5_r101_fpn_1x_colab_lr3.py``
(``seg_oversample_test_rnd9to15_ann_3147572.pkl``) and ``_lr15.py``
(``seg_oversample_test_rnd9to15_ann_256000-3147572.pkl``: 64k iterations x 4
images of stage 2 skipped)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from wf import REPO, new_workdir, snakemake


def test_l2_later_stages_use_the_oversampled_list_in_every_run_config():
    for name in ("config.yaml", "configs/run/openimages.yaml", "configs/run/tiny.yaml"):
        stages = yaml.safe_load((REPO / name).read_text())["models"]["L2"]["stages"]
        assert [s["list"] for s in stages] == ["leaf", "leaf_oversampled", "leaf_oversampled"], name


def test_l2_skips_are_the_originals_at_full_size(tmp_path: Path):
    # The full run's L2 stage table and images per iteration (1 image x 4 GPUs)
    # over the demo data: stage 2 is the first stage on the oversampled list
    # (skip 0); stage 3 skips stage 2's 64,000 x 4 = 256,000 entries.
    full = yaml.safe_load((REPO / "configs/run/openimages.yaml").read_text())
    l2 = full["models"]["L2"]
    override = {"training": {"images_per_gpu": full["training"]["images_per_gpu"]},
                "models": {"L2": {"gpus": l2["gpus"], "stages": l2["stages"]}}}
    workdir = new_workdir(tmp_path)
    (workdir / "l2_full.yaml").write_text(yaml.safe_dump(override))
    text = snakemake("-n", "-p", "--cores", "2", "train_L2", "--configfile", "l2_full.yaml",
                     cwd=workdir).stdout
    skips, lists = {}, {}
    for line in text.splitlines():
        out = re.search(r"--out results/models/L2/stage(\d)\.pth", line)
        skip = re.search(r"--skip (\d+)", line)
        order = re.search(r"--order results/annotations/lists/(\w+)\.npy", line)
        if out and skip and order:
            skips[int(out[1])] = int(skip[1])
            lists[int(out[1])] = order[1]
    assert skips == {1: 0, 2: 0, 3: 256_000}
    assert lists == {1: "leaf", 2: "leaf_oversampled", 3: "leaf_oversampled"}


def test_dcn_is_dcnv1_as_the_original():
    # The original's dcn=dict(modulated=False, deformable_groups=1) (L3 also
    # groups=64): mmcv 2's 'DCN' is DeformConv2dPack (DCNv1, 18 offset
    # channels), not ModulatedDeformConv2dPack (DCNv2, 27 = offsets + masks).
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    for name, layers, groups in (("L2", (2, 3, 4), 1), ("L3", (4,), 64)):
        backbone = Config.fromfile(str(REPO / f"configs/models/{name}.py")).model.backbone
        backbone.pop("init_cfg", None)
        backbone.depth = 50  # the same DCN settings, built faster
        net = MODELS.build(backbone)
        for k in (1, 2, 3, 4):
            conv = getattr(net, f"layer{k}")[0].conv2
            if k in layers:
                assert type(conv) is DeformConv2dPack, (name, k)
                assert not isinstance(conv, ModulatedDeformConv2dPack)
                assert conv.deform_groups == 1 and conv.groups == groups
                assert conv.conv_offset.out_channels == 18
            else:
                assert not isinstance(conv, DeformConv2dPack), (name, k)
