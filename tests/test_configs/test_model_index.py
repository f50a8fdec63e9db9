"""The model index: configs/<method>/metafile.yml, model-index.yml and the README model zoo
(written by tools/misc/make_metafiles.py)."""
import glob
import importlib.util
import os
import os.path as osp
import re

import pytest
import torch
import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHODS = ('dge', 'dit', 'dovit', 'msvit', 'dvt', 'baselines')


def _load_script():
    path = osp.join(REPO, 'tools', 'misc', 'make_metafiles.py')
    spec = importlib.util.spec_from_file_location('_make_metafiles', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _disk_configs(method):
    """Non-_base_ configs of configs/<method>/ found by walking the folder."""
    out = []
    for f in glob.glob(osp.join(REPO, 'configs', method, '**', '*.py'), recursive=True):
        r = osp.relpath(f, REPO).replace(os.sep, '/')
        if any(p.startswith('_') for p in r.split('/')[2:]):
            continue
        out.append(r)
    return sorted(out)


@pytest.fixture(scope='module')
def metafiles():
    return {m: _yaml(osp.join(REPO, 'configs', m, 'metafile.yml')) for m in METHODS}


@pytest.fixture(scope='module')
def models(metafiles):
    return {mod['Config']: (m, mod) for m, data in metafiles.items() for mod in data['Models']}


def test_model_index_imports_every_metafile():
    index = _yaml(osp.join(REPO, 'model-index.yml'))
    imports = index['Import']
    assert sorted(imports) == sorted(f'configs/{m}/metafile.yml' for m in METHODS)
    for imp in imports:
        assert osp.isfile(osp.join(REPO, imp)), imp
    # every method folder with configs has a metafile
    for d in sorted(os.listdir(osp.join(REPO, 'configs'))):
        if d.startswith('_') or not osp.isdir(osp.join(REPO, 'configs', d)):
            continue
        if _disk_configs(d):
            assert f'configs/{d}/metafile.yml' in imports, d


def test_modelindex_reads_the_index(metafiles):
    """mim's loader (modelindex) reads the whole index: every model, its collection resolved,
    no format errors."""
    import modelindex
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        mi = modelindex.load('model-index.yml')
        errors = mi.check(silent=True)
    finally:
        os.chdir(cwd)
    # modelindex resolves a collection's README against the metafile's folder, while the
    # OpenMMLab convention (mmdet's, mmseg's, mmpretrain's metafiles) is a path from the
    # repository root, which is what mim uses: those README paths must exist from the root
    readme_err = re.compile(r'Path to README file (\S+) is not a valid file\.$')
    other = []
    for err in errors:
        m = readme_err.search(err)
        if m and osp.isfile(osp.join(REPO, m.group(1))):
            continue
        other.append(err)
    assert other == []
    n = sum(len(d['Models']) for d in metafiles.values())
    assert len(mi.models) == n
    assert len({m.name for m in mi.models}) == n  # unique names
    for m in mi.models:
        assert m.full_model.paper is not None, m.name  # inherited from the collection
        assert m.weights is None


def test_metafile_format(metafiles):
    reps = _load_script().REPRESENTATIVES
    for method, data in metafiles.items():
        cols = {c['Name']: c for c in data['Collections']}
        assert cols, method
        for c in cols.values():
            assert c['Paper']['URL'].startswith('https://arxiv.org/abs/'), c
            assert c['Paper']['Title']
            assert c['README'] == f'configs/{method}/README.md'
            assert osp.isfile(osp.join(REPO, c['README']))
            assert osp.isfile(osp.join(REPO, c['Code']['URL'])), c['Code']
        for mod in data['Models']:
            assert mod['In Collection'] in cols
            stem = osp.splitext(osp.basename(mod['Config']))[0]
            # a name used in another folder too gets the folder as suffix (names are unique)
            assert mod['Name'] in (stem, f'{stem}_{method}'), mod['Name']
            assert mod['Weights'] is None  # nothing was trained here
            md = mod['Metadata']
            assert isinstance(md['Parameters'], int) and md['Parameters'] > 0, mod['Name']
            # static FLOPs: measured for every config by make_metafiles.py (slow; the
            # representative configs and the baselines first)
            if 'FLOPs' in md or mod['Config'] in reps or method == 'baselines':
                assert isinstance(md['FLOPs'], int) and md['FLOPs'] > 0, mod['Name']
                assert len(md['Input Size']) == 2
            if mod['Config'] in reps:
                assert md['Dynamic'] is True, mod['Name']
            if 'Realised FLOPs' in md:  # measured for the representative configs only
                assert mod['Config'] in reps, mod['Name']
                # what ran on the generated images: at most the model with every gate on plus the
                # gates' own cost (well under 1 %)
                assert 0 < md['Realised FLOPs'] <= md['FLOPs'] * 1.01, mod['Name']
            if mod['Results'] is not None:  # the paper's figures, marked as such
                assert md['Paper Source']
                for r in mod['Results']:
                    assert r['Task'] and r['Dataset'] and r['Metrics']


def test_every_config_is_listed_and_exists(metafiles):
    for method, data in metafiles.items():
        listed = [m['Config'] for m in data['Models']]
        assert len(listed) == len(set(listed))
        for c in listed:
            assert c.startswith(f'configs/{method}/')
            assert osp.isfile(osp.join(REPO, c)), c
        missing = sorted(set(_disk_configs(method)) - set(listed))
        assert missing == [], f'not in configs/{method}/metafile.yml: {missing}'


def test_check_mode_reports_missing_configs():
    mf = _load_script()
    configs = mf.all_configs()
    assert mf.check(configs) == []
    extra = dict(configs)
    extra['dge'] = configs['dge'] + ['configs/dge/not-a-config_1x_coco.py']
    problems = mf.check(extra)
    assert problems == ['missing from configs/dge/metafile.yml: '
                        'configs/dge/not-a-config_1x_coco.py']


def test_every_listed_config_loads_builds_and_params_match(models):
    """Every listed config loads; the model and its parts (backbone, neck, heads) are
    registered types of the config's codebase; the full-size model builds (on the meta device,
    so no memory is filled) and its parameter count is the metafile's."""
    import mmdet.registry
    import mmdyn  # noqa: F401  (registers mmdyn's modules)
    import mmpretrain.registry
    import mmseg.registry
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    registries = dict(mmseg=mmseg.registry.MODELS, mmdet=mmdet.registry.MODELS,
                      mmpretrain=mmpretrain.registry.MODELS)
    _load_script().cc.speed_up_config_loading()
    parts = ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'rpn_head', 'roi_head',
             'bbox_head', 'head')
    assert len(models) >= 200
    counted = {}
    for c, (method, mod) in sorted(models.items()):
        cfg = Config.fromfile(osp.join(REPO, c))
        scope = cfg.get('default_scope')
        assert scope in registries, c
        types = [cfg.model.type]
        for k in parts:
            v = cfg.model.get(k)
            for d in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(d, dict) and isinstance(d.get('type'), str):
                    types.append(d['type'])
        bad = [t for t in types if registries[scope].get(t) is None]
        assert bad == [], f'{c}: unregistered types {bad}'
        assert cfg.model.type.split('.')[-1] == mod['Metadata']['Architecture'][0], c
        # configs that differ in their schedule or data only build the same model: count once
        key = (scope, repr(cfg.model.to_dict()))
        if key not in counted:
            init_default_scope(scope)
            try:
                with torch.device('meta'):
                    model = MODELS.build(cfg.model)
            except RuntimeError:  # a module that computes a value at build: build it for real
                model = MODELS.build(cfg.model)
            counted[key] = sum(p.numel() for p in model.parameters())
        assert counted[key] == mod['Metadata']['Parameters'], c
    assert len(counted) < len(models)  # (the count above is not per config by mistake)


def test_recorded_static_flops_equal_get_flops():
    """The recorded static FLOPs are what get_flops.py computes (two cheap static configs)."""
    from mmdyn.analysis.complexity import (build_model_from_cfg, default_img_shape,
                                           generated_batch, load_config, model_complexity)
    meta = _yaml(osp.join(REPO, 'configs', 'baselines', 'metafile.yml'))
    recorded = {m['Config']: m['Metadata'] for m in meta['Models']}
    for c in ('configs/baselines/deit-small_4xb256_in1k.py',
              'configs/baselines/fpn_pvtv2-b1_4xb8-40k_ade20k-512x512.py'):
        cfg = load_config(osp.join(REPO, c))
        model = build_model_from_cfg(cfg)
        shape = default_img_shape(cfg, model)
        x, s = generated_batch(model, shape, 1)
        res = model_complexity(model, img_shape=tuple(x.shape[-2:]), data_samples=s)
        assert recorded[c]['FLOPs'] == int(round(res['flops'])), c
        assert recorded[c]['Input Size'] == list(x.shape[-2:])


def test_stale_cache_entries_kept_only_when_not_measuring():
    """A cache entry whose config files changed since it was measured is emptied for
    measuring again, except without measuring (``--no-measure``): then its figures are written
    as they are and the config is listed as stale (its old hash kept, so the next measuring run
    still measures it)."""
    cc = _load_script().cc
    c = 'configs/baselines/deit-small_4xb256_in1k.py'
    sha = cc.config_hash(osp.join(REPO, c))
    figures = dict(params=1, flops=2, info=dict(v=cc.INFO_VERSION, task='x'))
    cache = {c: dict(sha='0' * 16, **figures)}
    assert cc.stale([c], cache) == [c]
    kept = cc.ensure([c], ['info'], {k: dict(v) for k, v in cache.items()}, verbose=False,
                     save=False, keep_stale=True)
    assert kept[c]['params'] == 1 and kept[c]['flops'] == 2 and kept[c]['sha'] == '0' * 16
    # the figures are kept, the config-derived info is read from the config as it is now
    assert kept[c]['info']['v'] == cc.INFO_VERSION and kept[c]['info'].get('task') != 'x'
    assert kept[c]['info'] == cc.ensure([c], ['info'], {}, verbose=False, save=False)[c]['info']
    assert cc.stale([c], kept) == [c]
    with pytest.raises(ValueError, match='save=False'):
        cc.ensure([c], ['info'], dict(cache), verbose=False, save=True, keep_stale=True)
    fresh = cc.entry({k: dict(v) for k, v in cache.items()}, c, sha)
    assert fresh == dict(sha=sha, model_sha=cc.model_hash(osp.join(REPO, c)))
    assert cc.stale([c], {c: dict(sha=sha)}) == []



def test_figures_follow_the_model_not_the_files(tmp_path, monkeypatch):
    """A config whose files changed but whose resolved model and test pipeline did not (a
    schedule edit) keeps its measured figures under its new files hash and has its info read
    again; a change of the model or of the test pipeline empties the entry for measuring."""
    cc = _load_script().cc
    monkeypatch.setattr(cc, 'REPO', str(tmp_path))
    cfgs = tmp_path / 'configs'
    cfgs.mkdir()
    (cfgs / 'base.py').write_text(
        "default_scope = 'mmpretrain'\n"
        "model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', "
        "arch='s', drop_path_rate=0.1))\n"
        "test_dataloader = dict(dataset=dict(type='ImageNet', pipeline=[dict(type='Resize', "
        "scale=224)]))\n"
        "train_cfg = dict(max_epochs=300)\n")
    child = cfgs / 'child.py'
    c = 'configs/child.py'

    def write(extra):
        child.write_text("_base_ = './base.py'\n" + extra)
        return cc.config_hash(str(child))

    sha0 = write('')
    measured = cc.entry({}, c, sha0)
    assert measured == dict(sha=sha0, model_sha=cc.model_hash(str(child)))
    measured.update(params=7, flops=8.0, info=dict(v=cc.INFO_VERSION, epochs=300))
    sha1 = write('train_cfg = dict(max_epochs=100)\n')
    assert sha1 != sha0
    cache = {c: dict(measured)}
    assert cc.stale([c], cache) == []
    e = cc.entry(cache, c, sha1)
    assert e['sha'] == sha1 and e['params'] == 7 and e['flops'] == 8.0 and 'info' not in e
    assert cc.ensure([c], ['info'], cache, verbose=False, save=False)[c]['info']['epochs'] == 100
    for extra in ('model = dict(backbone=dict(drop_path_rate=0.0))\n',
                  "test_dataloader = dict(dataset=dict(pipeline=[dict(type='Resize', "
                  "scale=256)]))\n",
                  'crop_size = (128, 128)\n'):  # mmseg's measuring size
        sha2 = write(extra)
        cache = {c: dict(measured)}
        assert cc.stale([c], cache) == [c], extra
        e = cc.entry(cache, c, sha2)
        assert e == dict(sha=sha2, model_sha=cc.model_hash(str(child))), extra
        assert e['model_sha'] != measured['model_sha']

def test_no_measure_run_writes_the_committed_files(tmp_path, monkeypatch):
    """``make_metafiles.py --no-measure`` end to end, its outputs sent to ``tmp_path``: from the
    committed cache it writes byte for byte the committed metafiles, model index and model-zoo
    page, measures nothing and leaves the cache file alone."""
    mf = _load_script()
    out = {m: tmp_path / m / 'metafile.yml' for m in mf.METHODS}
    for p in out.values():
        p.parent.mkdir()
    monkeypatch.setattr(mf, 'metafile_path', lambda m: str(out[m]))
    monkeypatch.setattr(mf, 'MODEL_INDEX', str(tmp_path / 'model-index.yml'))
    monkeypatch.setattr(mf, 'README', str(tmp_path / 'model_zoo.md'))
    cache_before = open(mf.cc.CACHE, 'rb').read()

    def refused(*args, **kwargs):
        raise AssertionError('--no-measure built a model or saved the cache')

    for name in ('_build', 'save_cache'):   # every measurement builds its model first
        monkeypatch.setattr(mf.cc, name, refused)
    assert mf.main(['--no-measure']) == 0
    assert open(mf.cc.CACHE, 'rb').read() == cache_before
    pairs = [(out[m], osp.join(REPO, 'configs', m, 'metafile.yml')) for m in mf.METHODS]
    pairs += [(tmp_path / 'model-index.yml', osp.join(REPO, 'model-index.yml')),
              (tmp_path / 'model_zoo.md', osp.join(REPO, 'docs', 'model_zoo.md'))]
    for written, committed in pairs:
        assert open(written).read() == open(committed).read(), committed


def test_static_baselines_match_published_flops(metafiles):
    """Static baselines whose published FLOPs use our convention (1 FLOP = 1 multiply-add, same
    input size) agree within 1 %."""
    checked = 0
    for mod in metafiles['baselines']['Models']:
        md = mod['Metadata']
        if 'Paper FLOPs' not in md:
            continue
        paper = float(md['Paper FLOPs'].split()[0]) * 1e9
        assert abs(md['FLOPs'] - paper) / paper < 0.01, (mod['Name'], md['FLOPs'], paper)
        checked += 1
    assert checked >= 6


def test_readme_model_zoo_comes_from_the_metafiles(metafiles):
    with open(osp.join(REPO, 'docs', 'model_zoo.md')) as f:  # linked from the README
        text = f.read()
    assert '](docs/model_zoo.md)' in open(osp.join(REPO, 'README.md')).read()
    start, end = '<!-- model-zoo:start -->', '<!-- model-zoo:end -->'
    assert text.count(start) == 1 and text.count(end) == 1
    zoo = text[text.index(start):text.index(end)]
    assert 'bash tools/dist_train.sh' in zoo and 'bash tools/dist_test.sh' in zoo
    rows = {}
    for line in zoo.splitlines():
        m = re.match(r'\| \[\**([^\]*]+)\**\]\(([^)]+)\) \| [^|]+ \| ([^|]+) \| ([^|]+) \| '
                     r'([^|]+) \| ([^|]+) \|', line)
        if m:  # links are relative to docs/
            assert m.group(2).startswith('../configs/'), m.group(2)
            rows.setdefault(m.group(2)[len('../'):], []).append(m.groups())
    for method, data in metafiles.items():
        for mod in data['Models']:
            c = mod['Config']
            assert c in rows, f'{c} not in the README model zoo'
            md = mod['Metadata']
            for name, link, shape, params, flops, realised in rows[c]:
                assert name == osp.basename(c)
                assert params.strip() == f"{md['Parameters'] / 1e6:.2f}", c
                if 'FLOPs' in md:
                    assert shape.strip() == 'x'.join(str(s) for s in md['Input Size'])
                    assert flops.strip() == f"{md['FLOPs'] / 1e9:.2f}", c
                else:  # not measured yet
                    assert shape.strip() == '-' and flops.strip() == '-', c
                if 'Realised FLOPs' in md:
                    assert realised.strip().startswith(f"{md['Realised FLOPs'] / 1e9:.2f} ")
                else:
                    assert realised.strip() == '-'
