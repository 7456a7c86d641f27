"""Small Bottleneck backbones for the demo-size models.

mmdet's ResNet knows depths 18/34/50/101/152 and ResNeXt 50/101/152 only.
The demo needs a Bottleneck network (DCN only exists in Bottleneck blocks)
that trains in a fraction of a second per iteration on 2 CPU cores, so these
subclasses add two tiny depths, counted like the stock ones
(1 stem conv + 3 convs per block + 1 fc):

- depth 14: one Bottleneck block per stage, (1, 1, 1, 1);
- depth 26: two blocks per stage, (2, 2, 2, 2).

Everything else (``base_channels``, ``dcn``/``stage_with_dcn``, ResNeXt
``groups``/``base_width``, ``init_cfg``) is the stock implementation.
"""

from __future__ import annotations

from mmdet.models.backbones.resnet import Bottleneck, ResNet
from mmdet.models.backbones.resnext import Bottleneck as XBottleneck
from mmdet.models.backbones.resnext import ResNeXt
from mmdet.registry import MODELS

DEMO_STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
}


@MODELS.register_module()
class DemoResNet(ResNet):
    """ResNet with the extra demo depths 14 and 26 (Bottleneck blocks)."""

    arch_settings = {
        **ResNet.arch_settings,
        **{depth: (Bottleneck, blocks) for depth, blocks in DEMO_STAGE_BLOCKS.items()},
    }


@MODELS.register_module()
class DemoResNeXt(ResNeXt):
    """ResNeXt with the extra demo depths 14 and 26 (grouped Bottlenecks)."""

    arch_settings = {
        **ResNeXt.arch_settings,
        **{depth: (XBottleneck, blocks) for depth, blocks in DEMO_STAGE_BLOCKS.items()},
    }
