from .pvt import PVT, PVTStage, PVTv2  # noqa: F401
from .vit import ViT  # noqa: F401
from .dovit import DoViT  # noqa: F401
from .msvit import MSViT  # noqa: F401
from .dit import DiT  # noqa: F401
from .dge import DGEDPVT, DPVT, DGEPVT, DGEViT, DynamicGrainedEncoder  # noqa: F401
from .t2t_vit import T2TViT  # noqa: F401
