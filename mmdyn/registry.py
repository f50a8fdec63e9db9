"""mmdyn's registries.

Each is a child of mmengine's root registry with the scope ``mmdyn``. From an mmdet, mmseg or
mmpretrain config (whose ``default_scope`` is that codebase) reach mmdyn modules with the scope
prefix, ``type='mmdyn.DiT'``, after ``custom_imports=dict(imports=['mmdyn'])``. mmengine then
imports ``mmdyn.registry`` and finds this scope among the root's children.

mmdyn modules never build their own sub-modules through a registry by plain name (the default
scope of the run decides where a plain name is looked up, and that is not ``mmdyn``); they
construct them directly or use :func:`build_in_mmdyn_scope`.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import DefaultScope
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmdyn',
                  locations=['mmdyn.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmdyn',
                 locations=['mmdyn.engine.hooks'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmdyn',
                   locations=['mmdyn.evaluation'])
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, scope='mmdyn',
                       locations=['mmdyn.visualization'])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, scope='mmdyn',
                       locations=['mmdyn.visualization'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmdyn',
                    locations=['mmdyn.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmdyn',
                      locations=['mmdyn.datasets.transforms'])


def build_in_mmdyn_scope(registry, cfg, **kwargs):
    """Build ``cfg`` from ``registry`` with ``mmdyn`` as the default scope.

    Plain type names then resolve in mmdyn's registry and its ancestors (mmengine's root, where
    mmcv's bricks live), whatever the scope of the running codebase is.
    """
    with DefaultScope.overwrite_default_scope('mmdyn'):
        return registry.build(cfg, **kwargs)
