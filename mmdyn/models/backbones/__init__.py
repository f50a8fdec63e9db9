from mmdyn.utils.arguments import check_arguments

from .pvt import PVT, PVTStage, PVTv2  # noqa: F401
from .vit import ViT  # noqa: F401
from .dovit import DoViT  # noqa: F401
from .msvit import MSViT  # noqa: F401
from .dit import DiT  # noqa: F401
from .dge import DGEDPVT, DPVT, DGEPVT, DGEViT, DynamicGrainedEncoder  # noqa: F401
from .t2t_vit import T2TViT  # noqa: F401

# A misspelt argument names the backbone of the config and the closest valid name, also when the
# backbone hands **kwargs on to its host (DGEPVT -> PVT: not "PVT.__init__() got an unexpected
# keyword argument").
for _backbone in (PVT, PVTv2, ViT, DoViT, MSViT, DiT, DGEPVT, DGEViT, DGEDPVT, DPVT, T2TViT):
    check_arguments(_backbone)
del _backbone
