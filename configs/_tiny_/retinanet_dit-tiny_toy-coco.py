# CPU smoke config (not for results): DiT's RetinaNet config
# (../dit/retinanet_dit-b2_fpn_1x_coco.py) with a tiny four-stage DiT and a narrow head on
# 128x96 images of the generated COCO-layout data set and 4 iterations; validates at the end
# (box AP) and keeps the last checkpoint (iter_4.pth). When the data root moves, move the
# metric's ann_file with it (val_evaluator.0.ann_file / test_evaluator.0.ann_file).
_base_ = '../dit/retinanet_dit-b2_fpn_1x_coco.py'
from mmdyn.utils.config_parts import toy_detection_run as __toy_run  # noqa: E402

data_root = 'data/toy_coco/'
img_scale = (128, 96)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 1, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1]),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[8, 16, 16, 32], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1),
    # every box is kept (score_thr 0), so that an untrained smoke model still predicts some
    test_cfg=dict(nms_pre=200, score_thr=0.0, max_per_img=20))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook'), dict(type='mmdyn.GateMomentumHook')]

# the toy COCO run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root, img_scale, with_mask=False))
