# CPU smoke config (not for results): DGE Table 2's Mask R-CNN + DGE-PVT config
# (../dge/mask-rcnn_dge-pvt-s_fpn_1x_coco.py) with a tiny PVT and narrow heads on 128x96 images
# of the generated COCO-layout data set (tools/dataset_converters/make_toy_dataset.py --layout
# coco) and 4 iterations; validates at the end (box and mask AP) and keeps the last checkpoint
# (iter_4.pth). When the data root moves, move the metric's ann_file with it
# (val_evaluator.0.ann_file / test_evaluator.0.ann_file).
_base_ = '../dge/mask-rcnn_dge-pvt-s_fpn_1x_coco.py'
from mmdyn.utils.config_parts import toy_detection_run as __toy_run  # noqa: E402

data_root = 'data/toy_coco/'
img_scale = (128, 96)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1]),
        drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[16, 16, 32, 32], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32),
        mask_roi_extractor=dict(out_channels=16),
        mask_head=dict(num_convs=1, in_channels=16, conv_out_channels=16)),
    # fewer proposals and sampled RoIs than the real 2000 / 512 (CPU)
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    # every box is kept (score_thr 0), so that an untrained smoke model still predicts some
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50), rcnn=dict(score_thr=0.0, max_per_img=20)))
custom_hooks = [dict(type='mmdyn.DynamicStatsHook')]

# the toy COCO run: pipelines, data loaders, 4 iterations, hooks, evaluators
locals().update(__toy_run(data_root, img_scale, with_mask=True))
