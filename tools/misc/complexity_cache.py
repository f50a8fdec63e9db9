"""Measured params / FLOPs of mmdyn's configs, cached in ``model_complexity.json`` next to this
file (used by ``make_metafiles.py``).

Each entry is keyed by the config's path relative to the repository root and remembers two
hashes: ``sha``, of the config file and every repository file it inherits from (``_base_``),
and ``model_sha``, of what the figures depend on: the resolved ``model`` dict, the test
pipeline and ``crop_size`` (the input size). When the files changed but those did not (a
schedule, an optimiser, a training augmentation), the figures stand and only the config's
``info`` is read again; otherwise the entry is measured again. Three figures, each measured on
demand:

* ``params``: parameters of the whole model (built with random weights; on the ``meta`` device
  when the modules allow it, else on the CPU);
* ``static``: static FLOPs of the whole model for one image of the task's usual test size, as
  ``tools/analysis_tools/get_flops.py`` computes them (``mmdyn.analysis.complexity``;
  1 FLOP = 1 multiply-add);
* ``realised``: ``get_flops.get_flops`` on a few generated images with random (untrained) gates
  (weights seeded): the mean realised FLOPs per image of dynamic models.

The cache is written after every measured config, so an interrupted run keeps its progress.
"""
import argparse
import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import os.path as osp
import sys
import tempfile
import time
import traceback
from typing import Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CACHE = osp.join(REPO, 'tools', 'misc', 'model_complexity.json')
REALISED_IMAGES = 3
INFO_VERSION = 2  # bump when config_info changes: cached infos are read again


def speed_up_config_loading() -> None:
    """mmengine reads every metafile of an installed codebase each time a config inherits a
    whole config of it (``mmseg::segformer/...``: about 0.6 s a base); read each codebase's
    index once and look configs up in it (it cannot change while the process runs). A name
    the index lacks raises ``ValueError`` as mmengine's own lookup does."""
    import mmengine.config.utils as u
    if getattr(u._get_cfg_metainfo, '_mmdyn_cached', False):
        return
    from mmengine.fileio import load
    tables = {}

    def cfg_metainfo(package_path: str, cfg_path: str) -> dict:
        if package_path not in tables:
            table = {}
            index = load(osp.join(package_path, '.mim', 'model-index.yml'))
            for meta_path in index['Import']:
                for m in load(osp.join(package_path, '.mim', meta_path))['Models']:
                    if 'Config' in m:  # the first entry of a config wins, as in mmengine
                        table.setdefault(m['Config'].partition('/')[-1], m)
            tables[package_path] = table
        if cfg_path not in tables[package_path]:
            raise ValueError(f'Expected configs: {tables[package_path].keys()}, but got '
                             f'{cfg_path}')
        return tables[package_path][cfg_path]

    cfg_metainfo._mmdyn_cached = True
    u._get_cfg_metainfo = cfg_metainfo


def rel(path: str) -> str:
    return osp.relpath(osp.abspath(path), REPO).replace(os.sep, '/')


def config_files(path: str) -> list:
    """The config and every repository file it inherits from, recursively (``mmdet::``-style
    bases of the installed codebases are not followed: their versions are pinned)."""
    from mmengine.config import Config
    seen, todo = [], [osp.abspath(path)]
    while todo:
        f = todo.pop()
        if f in seen or not osp.isfile(f):
            continue
        seen.append(f)
        try:
            bases = Config._get_base_files(f)
        except Exception:  # noqa: BLE001
            bases = []
        for b in bases:
            if '::' in b:
                continue
            todo.append(osp.normpath(osp.join(osp.dirname(f), b)))
    return seen


def config_hash(path: str) -> str:
    h = hashlib.sha256()
    for f in sorted(config_files(path)):
        h.update(rel(f).encode())
        with open(f, 'rb') as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:16]


def _plain(obj):
    """``obj`` with dicts, lists and tuples made plain, for a stable JSON text (classes and
    functions given by their qualified names)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, type) or callable(obj):
        return f'{getattr(obj, "__module__", "")}.{getattr(obj, "__qualname__", repr(obj))}'
    return repr(obj)


MODEL_HASH_VERSION = 2  # bump when model_hash changes (entries of changed files: measured again)


@functools.lru_cache(maxsize=None)
def _model_hash(path: str, files_sha: str) -> str:
    from mmdyn.analysis.complexity import load_config
    cfg = load_config(path)
    dl = cfg.get('test_dataloader', None) or cfg.get('val_dataloader', None) or {}
    ds = dl.get('dataset', {}) if isinstance(dl, dict) else {}
    while isinstance(ds, dict) and 'pipeline' not in ds and isinstance(ds.get('dataset'), dict):
        ds = ds['dataset']  # wrapped data sets
    pipeline = ds.get('pipeline', None) if isinstance(ds, dict) else None
    # crop_size: the measuring size of mmseg configs (analysis.complexity.default_img_shape)
    text = json.dumps(_plain(dict(v=MODEL_HASH_VERSION, model=cfg.get('model', None),
                                  test_pipeline=pipeline, crop_size=cfg.get('crop_size', None))),
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_hash(path: str) -> str:
    """The hash of what a config's figures depend on: its resolved ``model`` dict (data
    preprocessor and test-time settings included), its test pipeline and its ``crop_size``
    (the input size they are measured at)."""
    return _model_hash(osp.abspath(path), config_hash(path))


def still_valid(e: Optional[dict], path: str, sha: str) -> bool:
    """Whether a cache entry's figures describe the config at ``path`` (files hash ``sha``):
    the same files, or other files that resolve to the same model and test pipeline."""
    if e is None:
        return False
    if e.get('sha') == sha:
        return True
    return e.get('model_sha') is not None and e['model_sha'] == model_hash(path)


def load_cache() -> dict:
    if not osp.isfile(CACHE):
        return {}
    with open(CACHE) as f:
        return json.load(f)


def save_cache(cache: dict, keys=None) -> None:
    """Write ``cache``; with ``keys``, merge only those entries into the file on disk (under a
    lock), so that several measuring processes can share the file."""
    import fcntl
    with open(osp.join(tempfile.gettempdir(), 'mmdyn_model_complexity.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if keys is not None:
            disk = load_cache()
            for k in keys:
                if k not in cache:
                    continue
                d = disk.get(k)
                if d is not None and d.get('sha') == cache[k].get('sha'):
                    d.update(cache[k])  # keep what another process measured meanwhile
                    if 'errors' not in cache[k]:
                        d.pop('errors', None)
                else:
                    disk[k] = cache[k]
            cache = disk
        data = json.dumps({k: cache[k] for k in sorted(cache)}, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(CACHE), suffix='.json.tmp')
        with os.fdopen(fd, 'w') as f:
            f.write(data + '\n')
        os.chmod(tmp, 0o644)
        os.replace(tmp, CACHE)


def entry(cache: dict, cfg_rel: str, sha: str, keep_stale: bool = False) -> dict:
    """The cache entry of a config. When its files changed but its model and test pipeline
    did not (:func:`still_valid`), the entry takes the new ``sha`` and keeps its figures, and
    its ``info`` is read again; when the model changed, it is emptied for measuring again.
    With ``keep_stale`` such an entry keeps its measured figures and its old hashes (so that
    the next measuring run still measures it again) but not its ``info``, which is read from
    the config as it is."""
    path = osp.join(REPO, cfg_rel)
    e = cache.get(cfg_rel)
    if e is not None and e.get('sha') != sha and still_valid(e, path, sha):
        e['sha'] = sha
        e.pop('info', None)
    elif e is not None and e.get('sha') != sha and keep_stale:
        e.pop('info', None)
    elif e is None or e.get('sha') != sha:
        e = dict(sha=sha)
        cache[cfg_rel] = e
    if 'model_sha' not in e and e.get('sha') == sha and osp.isfile(path):
        e['model_sha'] = model_hash(path)
    return e


@contextlib.contextmanager
def _quiet():
    """Measurement logs (mmengine's logger, warnings) go to a buffer, shown on failure."""
    import warnings
    buf = io.StringIO()
    from mmdyn.analysis.complexity import stdout_to_stderr
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with stdout_to_stderr(), contextlib.redirect_stderr(buf):
            yield buf


def _build(cfg, device=None):
    from mmdyn.analysis.complexity import build_model_from_cfg
    if device == 'meta':
        import torch
        with torch.device('meta'):
            return build_model_from_cfg(cfg, device='meta')
    return build_model_from_cfg(cfg)


def measure_params(path: str) -> dict:
    from mmdyn.analysis.complexity import count_params, load_config
    cfg = load_config(path)
    try:
        model = _build(cfg, 'meta')
        where = 'meta'
    except Exception:  # noqa: BLE001
        model = _build(cfg)
        where = 'cpu'
    from mmdyn.models.utils.dynamic import find_dynamic_modules
    return dict(params=int(count_params(model)), model=type(model).__name__,
                backbone=type(getattr(model, 'backbone', model)).__name__, built_on=where,
                dynamic=bool(find_dynamic_modules(model)))


def measure_static(path: str, shape=None) -> dict:
    """The static part of ``get_flops.get_flops``: one generated image of the task's usual test
    size through the data preprocessor, then ``model_complexity`` without running the model."""
    from mmdyn.analysis.complexity import (count_params, default_img_shape, generated_batch,
                                           load_config, model_complexity)
    cfg = load_config(path)
    model = _build(cfg)
    shape = tuple(shape) if shape else default_img_shape(cfg, model)
    inputs, samples = generated_batch(model, shape, 1)
    input_shape = [int(s) for s in inputs.shape[-2:]]
    try:
        res = model_complexity(model, img_shape=tuple(input_shape), data_samples=samples)
    except AttributeError as e:
        # mmdet's Sparse R-CNN reads the (empty) ground truth of its data samples even in
        # tensor mode; get_flops's generated samples have none (reported to the lead)
        if 'gt_instances' not in str(e) or not samples:
            raise
        import torch
        from mmengine.structures import InstanceData
        for s in samples:
            s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                          labels=torch.zeros(0, dtype=torch.long))
        res = model_complexity(model, img_shape=tuple(input_shape), data_samples=samples)
    return dict(params=int(count_params(model)), flops=float(res['flops']),
                backbone_flops=float(res['backbone_flops']), shape=list(shape),
                input_shape=input_shape, backbone_method=res['backbone_method'])


def _get_flops_module():
    path = osp.join(REPO, 'tools', 'analysis_tools', 'get_flops.py')
    spec = importlib.util.spec_from_file_location('_mmdyn_get_flops', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure_realised(path: str, shape=None, num_images: int = REALISED_IMAGES) -> dict:
    """``get_flops`` (whole model) on ``num_images`` images, random weights and gates (the
    weights seeded, so that a re-measured figure is the same; the images are seeded by
    ``get_flops``)."""
    import torch
    gf = _get_flops_module()
    torch.manual_seed(0)
    argv = [path, '--num-images', str(num_images)]
    if shape:
        argv += ['--shape', str(shape[0]), str(shape[1])]
    args = gf.parse_args(argv)
    out = gf.get_flops(args)
    if not out['is_dynamic']:
        return dict(realised=None)
    return dict(realised=dict(
        mean=out['flops_dynamic_mean'] * 1e9, min=out['flops_dynamic_min'] * 1e9,
        max=out['flops_dynamic_max'] * 1e9, ratio=out['flops_dynamic_ratio'],
        static=out['flops'] * 1e9, images=out['images'], num_images=out['num_images'],
        shape=out['shape'], weights='random'))


def config_info(path: str) -> dict:
    """What the metafile says about a config, read from the config itself (no model built)."""
    import re

    from mmdyn.analysis.complexity import load_config
    cfg = load_config(path)
    scope = cfg.get('default_scope', None)
    model = cfg.model

    def typ(d):
        t = d.get('type') if isinstance(d, dict) else None
        if t is None:
            return None
        t = t if isinstance(t, str) else getattr(t, '__name__', str(t))
        return t.split('.')[-1]

    arch = []
    for part in (model, model.get('backbone'), model.get('neck'), model.get('decode_head'),
                 model.get('rpn_head'), model.get('roi_head'), model.get('bbox_head'),
                 model.get('head')):
        if isinstance(part, (list, tuple)):
            part = part[0] if part else None
        t = typ(part)
        if t and t not in arch:
            arch.append(t)

    def dataset_type(key):
        dl = cfg.get(key, None) or {}
        ds = dl.get('dataset', {}) if isinstance(dl, dict) else {}
        while isinstance(ds, dict) and 'dataset' in ds and 'data_root' not in ds:
            ds = ds['dataset']
        return typ(ds)

    info = dict(v=INFO_VERSION, scope=scope, architecture=arch,
                train_dataset=dataset_type('train_dataloader'),
                test_dataset=dataset_type('test_dataloader') or dataset_type('val_dataloader'))
    has_mask = 'mask_head' in str(model.get('roi_head', {})) or bool(
        re.search(r'mask', typ(model) or '', re.I))
    info['has_mask'] = bool(has_mask)
    tc = cfg.get('train_cfg', None) or {}
    if tc.get('max_epochs'):
        info['epochs'] = int(tc['max_epochs'])
    if tc.get('max_iters'):
        info['iterations'] = int(tc['max_iters'])
    m = re.search(r'(\d+)xb(\d+)', osp.basename(path))
    per_gpu = (cfg.get('train_dataloader', None) or {}).get('batch_size', None)
    if m:
        info['batch_size'] = int(m.group(1)) * int(m.group(2))
    elif (cfg.get('auto_scale_lr', None) or {}).get('base_batch_size'):
        info['batch_size'] = int(cfg.auto_scale_lr.base_batch_size)
    elif per_gpu:
        info['batch_size'] = int(per_gpu)
    crop = cfg.get('crop_size', None)
    if crop:
        info['crop_size'] = [int(c) for c in crop]
    if scope == 'mmpretrain':  # the test pipeline's final size (e.g. 256 for DGE's configs)
        size = None
        dl = cfg.get('test_dataloader', None) or cfg.get('val_dataloader', None) or {}
        ds = dl.get('dataset', {}) if isinstance(dl, dict) else {}
        for t in (ds.get('pipeline', None) or []) if isinstance(ds, dict) else []:
            v = None
            if typ(t) == 'CenterCrop':
                v = t.get('crop_size')
            elif typ(t) == 'Resize':
                v = t.get('scale')
            if isinstance(v, int):
                size = [v, v]
            elif isinstance(v, (list, tuple)) and len(v) == 2 and all(
                    isinstance(x, int) and x > 0 for x in v):
                size = [int(v[1]), int(v[0])]  # (w, h) in mmcv
        if size:
            info['test_size'] = size
    return dict(info=info)


def wanted_shape(e: dict):
    """The input size to measure at: the test pipeline's size for classifiers (get_flops's
    default otherwise)."""
    return (e.get('info') or {}).get('test_size')


MEASURES = dict(info=(config_info, ('info', )),
                params=(measure_params, ('params', 'dynamic')),
                static=(measure_static, ('flops', )),
                realised=(measure_realised, ('realised', )))


def stale(configs: list, cache: dict) -> list:
    """The configs whose cache entry was measured from files that have changed since."""
    speed_up_config_loading()
    return [c for c in configs if c in cache and osp.isfile(osp.join(REPO, c))
            and not still_valid(cache[c], osp.join(REPO, c), config_hash(osp.join(REPO, c)))]


def ensure(configs: list, kinds=('params', ), cache: dict = None, verbose=True,
           save=True, keep_stale=False) -> dict:
    """Measure what is missing of ``kinds`` for ``configs`` (paths relative to the repo).
    ``keep_stale``: an entry whose config files changed keeps its figures (see :func:`entry`)
    instead of being measured again from scratch; only without ``save`` (the entry's old hash
    would go to disk with its new info)."""
    if keep_stale and save:
        raise ValueError('keep_stale is for writing from the cache without measuring: '
                         'give save=False')
    speed_up_config_loading()
    if cache is None:
        cache = load_cache()
    for kind in kinds:
        fn, keys = MEASURES[kind]
        for c in configs:
            path = osp.join(REPO, c)
            if not osp.isfile(path):
                continue
            sha = config_hash(path)
            e = entry(cache, c, sha, keep_stale=keep_stale)
            want = wanted_shape(e) if kind in ('static', 'realised') else None

            def done(e):
                if not all(k in e for k in keys):
                    return False
                if kind == 'info':
                    return e['info'].get('v') == INFO_VERSION
                if want is None:
                    return True
                got = e.get('shape') if kind == 'static' else (e.get('realised') or {}).get(
                    'shape')
                return got is None or list(got) == list(want)

            if done(e):
                continue
            if save:  # another process may have measured it meanwhile
                disk = load_cache().get(c, {})
                if disk.get('sha') == sha:
                    disk.update({k: v for k, v in e.items() if k not in disk})
                    cache[c] = e = disk
                    if done(e):
                        continue
            t = time.time()
            with _quiet() as buf:
                try:
                    res = fn(path, want) if want is not None else fn(path)
                    err = None
                except Exception as ex:  # noqa: BLE001
                    res, err = None, f'{type(ex).__name__}: {ex}'
                    tb = traceback.format_exc()
            if err is not None:
                e.setdefault('errors', {})[kind] = err
                if verbose:
                    print(f'[{kind}] {c}: FAILED {err}\n{buf.getvalue()[-2000:]}\n{tb}',
                          file=sys.stderr, flush=True)
            else:
                e.get('errors', {}).pop(kind, None)
                if not e.get('errors'):
                    e.pop('errors', None)
                e.update(res)
                if verbose:
                    print(f'[{kind}] {c}: {({k: res.get(k) for k in keys})} '
                          f'({time.time() - t:.0f} s)', file=sys.stderr, flush=True)
            if save:
                save_cache(cache, keys=[c])
    return cache


def main(argv=None):
    p = argparse.ArgumentParser(description='measure params / FLOPs of configs into the cache')
    p.add_argument('configs', nargs='+')
    p.add_argument('--kinds', nargs='+', default=['params'], choices=list(MEASURES))
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    ensure([rel(c) for c in args.configs], args.kinds)


if __name__ == '__main__':
    main()
