"""apply_init_cfg: the one end of ViT's and PVT's init_weights (no init_cfg swapping)."""
import pytest
import torch
import torch.nn as nn

from mmdyn.models.backbones import PVT, ViT

TINY_VIT = dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2)
TINY_PVT = dict(embed_dims=[16, 16, 32, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1])


@pytest.mark.parametrize('build', [lambda **kw: ViT(arch=TINY_VIT, img_size=32, **kw),
                                   lambda **kw: PVT(arch=dict(TINY_PVT), **kw)])
def test_other_init_cfg_and_pretrained(build, tmp_path):
    m = build(init_cfg=dict(type='Constant', val=0.25, bias=0.5, layer='Linear'))
    m.init_weights()
    lin = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert lin and all(bool((x.weight == 0.25).all() and (x.bias == 0.5).all()) for x in lin)
    assert m.init_cfg['type'] == 'Constant' and m.is_init

    torch.manual_seed(0)
    src = build()
    src.init_weights()
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in src.state_dict().items()}}, path)
    cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')
    torch.manual_seed(1)
    dst = build(init_cfg=cfg)
    dst.init_weights()
    assert dst.init_cfg == cfg
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
