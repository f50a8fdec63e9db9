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


def _child(name: str, parent: Registry, location: str) -> Registry:
    """A registry of scope ``mmdyn`` under mmengine's ``parent``, filled from ``location``."""
    return Registry(name, parent=parent, scope='mmdyn', locations=[location])


MODELS = _child('model', MMENGINE_MODELS, 'mmdyn.models')
HOOKS = _child('hook', MMENGINE_HOOKS, 'mmdyn.engine.hooks')
METRICS = _child('metric', MMENGINE_METRICS, 'mmdyn.evaluation')
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'mmdyn.visualization')
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'mmdyn.visualization')
DATASETS = _child('dataset', MMENGINE_DATASETS, 'mmdyn.datasets')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'mmdyn.datasets.transforms')


def build_in_mmdyn_scope(registry, cfg, **kwargs):
    """Build ``cfg`` from ``registry`` with ``mmdyn`` as the default scope.

    Plain type names then resolve in mmdyn's registry and its ancestors (mmengine's root, where
    mmcv's bricks live), whatever the scope of the running codebase is.
    """
    with DefaultScope.overwrite_default_scope('mmdyn'):
        return registry.build(cfg, **kwargs)
