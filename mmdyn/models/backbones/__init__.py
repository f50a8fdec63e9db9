from .pvt import PVT, PVTStage, PVTv2  # noqa: F401
from .vit import ViT  # noqa: F401
from .dovit import DoViT  # noqa: F401
