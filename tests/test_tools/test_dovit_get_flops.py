"""get_flops on a DoViT config (the paper's Fig. 6): realised FLOPs per image and the per-block
table of kept tokens and FLOPs, checked against the analytic block counts. The benchmark config
forces the kept tokens, so the figures are exact with random weights."""
import importlib.util
import os.path as osp
import textwrap

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'get_flops.py')
CFG = osp.join(ROOT, 'configs', 'dovit',
               'setr_dovit-b_naive_8xb1-80k_cityscapes-768x768_keep0.5.py')
S = 64


def load_tool():
    spec = importlib.util.spec_from_file_location('get_flops_dovit', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_config(tmp_path, ratios):
    cfg = tmp_path / 'tiny_dovit.py'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{CFG}'
        model = dict(
            data_preprocessor=dict(size=({S}, {S})),
            backbone=dict(
                arch=dict(_delete_=True, embed_dims=32, depth=6, num_heads=2, mlp_ratio=2),
                img_size=({S}, {S}), init_cfg=None, out_indices=(1, 3, 5),
                decision_layers=(2, 4), decision_override=dict(keep_ratios={ratios!r})),
            decode_head=dict(in_channels=32, channels=16, in_index=2),
            test_cfg=dict(mode='whole'))
        test_dataloader = dict(dataset=dict(data_root='{tmp_path / 'no_such_root'}'))
    """))
    return str(cfg)


@pytest.mark.parametrize('ratios,counts', [((0.5, 0.25), [17, 17, 9, 9, 5, 5]),
                                           ((1.0, 1.0), [17] * 6)])
def test_block_table_and_realised_flops(tmp_path, ratios, counts):
    tool = load_tool()
    out = tool.get_flops(tool.parse_args([
        tiny_config(tmp_path, ratios), '--backbone-only', '--num-images', '2', '--shape',
        str(S), str(S)]))
    assert out['is_dynamic'] and out['images'] == 'generated' and out['num_images'] == 2
    (name, rows), = out['block_tables'].items()
    assert name == 'backbone'
    # the same backbone, built alone, for the analytic per-block counts
    from mmdyn.models.backbones import DoViT
    bb = DoViT(arch=dict(embed_dims=32, depth=6, num_heads=2, mlp_ratio=2), num_classes=19,
               img_size=(S, S), decision_layers=(2, 4), aux_head='setr_up')
    assert [r['block'] for r in rows] == [f'blocks.{i}' for i in range(6)]
    assert [r['tokens'] for r in rows] == [float(c) for c in counts]
    assert [r['kept_ratio'] for r in rows] == [(c - 1) / 16 for c in counts]
    block_flops = [int(bb.blocks[i].flops(c)) for i, c in enumerate(counts)]
    assert [r['flops'] for r in rows] == [float(f) for f in block_flops]
    # per-block sum + patch embedding + auxiliary heads = the realised backbone FLOPs; the
    # config's two SETR-UP heads: 1x1 conv 32 -> 256 on the 16 tokens, 1x1 conv 256 -> 19 on
    # the 16 x 16 up-sampled pixels
    total = sum(block_flops) + bb.patch_embed.flops((S, S)) + 2 * (
        16 * 32 * 256 + 256 * 256 * 19)
    assert out['flops_dynamic_mean'] * 1e9 == pytest.approx(total, rel=1e-6)
    assert out['flops_dynamic_min'] == out['flops_dynamic_max'] == out['flops_dynamic_mean']
    assert out['flops'] * 1e9 == pytest.approx(bb.static_flops((S, S)), rel=1e-6)
    assert out['flops_dynamic_ratio'] == pytest.approx(total / bb.static_flops((S, S)))
    assert out['stats_mean']['kept_ratio_d0'] == pytest.approx(ratios[0])
    assert out['stats_mean']['kept_ratio'] == pytest.approx(
        sum(c - 1 for c in counts) / (16 * 6))
    # printed as a table (flops in GFLOPs)
    text = tool.format_text(out)
    assert 'per block of backbone' in text
    assert f'{block_flops[-1] / 1e9:.4f}' in text
