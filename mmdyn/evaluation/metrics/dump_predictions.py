"""``tools/test.py --out`` for segmentation: the predictions without the per-class logits.

mmengine's ``DumpResults`` keeps every data sample whole until the end of the test, and an mmseg
sample holds ``seg_logits`` (``num_classes x H x W`` floats: about 200 MB for one 150-class
ADE20K image at its original size) and the ground truth. :class:`DumpPredictions` drops the
keys named in ``drop_keys`` from each sample as it arrives, so the file (and the memory of the
test) holds what was predicted: ``pred_sem_seg`` and the sample's metainfo, plus the records of
the dynamic modules (``dynamic_flops`` ...).
"""
from typing import Any, Optional, Sequence

from mmengine.evaluator import DumpResults

from mmdyn.registry import METRICS


@METRICS.register_module()
class DumpPredictions(DumpResults):
    """Dump the predictions to a pickle file, without ``drop_keys``.

    Args:
        out_file_path (str): a ``.pkl`` / ``.pickle`` file.
        drop_keys (sequence of str): keys of each sample (a dict) not written. Defaults to
            mmseg's per-class logits and ground truth.
        collect_device, collect_dir: see mmengine's ``DumpResults``.
    """

    def __init__(self, out_file_path: str,
                 drop_keys: Sequence[str] = ('seg_logits', 'gt_sem_seg'),
                 collect_device: str = 'cpu', collect_dir: Optional[str] = None) -> None:
        super().__init__(out_file_path, collect_device=collect_device, collect_dir=collect_dir)
        self.drop_keys = tuple(drop_keys)

    def process(self, data_batch: Any, predictions: Sequence[dict]) -> None:
        kept = [{k: v for k, v in p.items() if k not in self.drop_keys}
                if isinstance(p, dict) else p for p in predictions]
        super().process(data_batch, kept)
