#!/usr/bin/env python
"""Write ``configs/<method>/metafile.yml``, the top-level ``model-index.yml`` and the model-zoo
page ``docs/model_zoo.md`` from mmdyn's configs.

    python tools/misc/make_metafiles.py            # measure what is missing, then write
    python tools/misc/make_metafiles.py --no-measure   # write from the cache only (figures
                                                    # of changed configs kept and listed)
    python tools/misc/make_metafiles.py --check    # write nothing; exit 1 if a config is
                                                    # missing from the metafiles (or stale)

Every config under ``configs/<method>/`` (``dge``, ``dit``, ``dovit``, ``msvit``, ``dvt``,
``baselines``; folders starting with ``_`` such as ``_base_`` are skipped) becomes one model of
the method's metafile (OpenMMLab / ``modelindex`` format: ``Collections`` and ``Models``).

Figures and where they come from:

* ``Parameters`` (whole model) and ``FLOPs`` (static, whole model, one image of the task's usual
  test size, **1 FLOP = 1 multiply-add**, as ``tools/analysis_tools/get_flops.py``) are measured
  with random weights through ``mmdyn.analysis.complexity`` and cached in
  ``tools/misc/model_complexity.json`` (keyed by config path, with a hash of the config and its
  repository ``_base_`` files and one of its resolved model and test pipeline: re-running
  measures only new configs and those whose model or test pipeline changed);
* ``Realised FLOPs``: for one representative dynamic config per method and codebase
  (``REPRESENTATIVES``), ``get_flops`` on a few generated images with random (untrained) gates;
* the paper's figures (``Results`` metrics, ``Paper FLOPs``, ``Paper Parameters``) come from
  ``tools/misc/paper_results.yml`` (quoted from ``configs/<method>/README.md``). No weights were
  trained in this repository: ``Weights`` is null and every metric is the paper's.
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import OrderedDict

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
import complexity_cache as cc  # noqa: E402

REPO = cc.REPO
README = osp.join(REPO, 'docs', 'model_zoo.md')  # the generated model-zoo page
MODEL_INDEX = osp.join(REPO, 'model-index.yml')
PAPER_RESULTS = osp.join(HERE, 'paper_results.yml')
ZOO_START = '<!-- model-zoo:start -->'
ZOO_END = '<!-- model-zoo:end -->'

# folder -> collections (the first one is the default of the folder)
METHODS = OrderedDict([
    ('dge', [dict(
        Name='DGE', Title='Dynamic Grained Encoder for Vision Transformers',
        URL='https://arxiv.org/abs/2301.03831', Venue='NeurIPS 2021',
        Code='mmdyn/models/backbones/dge.py')]),
    ('dit', [dict(
        Name='DiT', Title='DiT: Efficient Vision Transformers with Dynamic Token Routing',
        URL='https://arxiv.org/abs/2308.03409', Venue='arXiv 2023',
        Code='mmdyn/models/backbones/dit.py')]),
    ('dovit', [dict(
        Name='DoViT', Title='Dynamic Token-Pass Transformers for Semantic Segmentation',
        URL='https://arxiv.org/abs/2308.01944', Venue='WACV 2024',
        Code='mmdyn/models/backbones/dovit.py')]),
    ('msvit', [dict(
        Name='MSViT', Title='MSViT: Dynamic Mixed-scale Tokenization for Vision Transformers',
        URL='https://arxiv.org/abs/2307.02321', Venue='ICCV Workshops 2023',
        Code='mmdyn/models/backbones/msvit.py')]),
    ('dvt', [dict(
        Name='DVT',
        Title='Not All Images are Worth 16x16 Words: Dynamic Transformers for Efficient Image '
        'Recognition',
        URL='https://arxiv.org/abs/2105.15075', Venue='NeurIPS 2021',
        Code='mmdyn/models/classifiers/dvt.py')]),
    ('baselines', [
        dict(Name='PVTv2 (static baseline)',
             Title='PVT v2: Improved Baselines with Pyramid Vision Transformer',
             URL='https://arxiv.org/abs/2106.13797', Venue='CVMJ 2022',
             Code='mmdyn/models/backbones/pvt.py', Match='pvtv2'),
        dict(Name='DeiT (static baseline)',
             Title='Training data-efficient image transformers & distillation through attention',
             URL='https://arxiv.org/abs/2012.12877', Venue='ICML 2021',
             Code='mmdyn/models/backbones/vit.py', Match='deit'),
        dict(Name='ViT (static baseline)',
             Title='An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale',
             URL='https://arxiv.org/abs/2010.11929', Venue='ICLR 2021',
             Code='mmdyn/models/backbones/vit.py', Match='vit'),
    ]),
])
DISPLAY = dict(dge='DGE', dit='DiT', dovit='DoViT', msvit='MSViT', dvt='DVT',
               baselines='Static baselines')

# one dynamic config per method and codebase: realised FLOPs on generated images
REPRESENTATIVES = [
    'configs/dge/dge-pvt-s_4xb256_in1k-256px.py',
    'configs/dge/fpn_dge-pvt-s_4xb8-80k_ade20k-512x512.py',
    'configs/dge/mask-rcnn_dge-pvt-s_fpn_1x_coco.py',
    'configs/dit/dit-b2_8xb128_in1k.py',
    'configs/dit/fpn_dit-b2_4xb4-40k_ade20k-512x512.py',
    'configs/dit/mask-rcnn_dit-b2_fpn_1x_coco.py',
    'configs/dovit/setr_dovit-b_naive_8xb1-80k_cityscapes-768x768.py',
    'configs/msvit/msvit-s-p16-32_gbas-ctr-g0.5-w4_1xb512-20e_in1k.py',
    'configs/msvit/segmenter_msvit-s-p16-32-g0.5_mask_8xb1-160k_ade20k-512x512.py',
    'configs/dvt/dvt_deit-s_8xb128_in1k.py',
]

DATASETS = dict(ADE20KDataset='ADE20K', CityscapesDataset='Cityscapes', CocoDataset='COCO',
                ImageNet='ImageNet-1k', CIFAR10='CIFAR-10', CIFAR100='CIFAR-100')
TASKS = dict(mmseg='Semantic Segmentation', mmdet='Object Detection',
             mmpretrain='Image Classification')
NUM_GPUS_DEFAULT = 8


# ----------------------------------------------------------------------------- discovery
def method_configs(method: str) -> list:
    """Non-``_base_`` configs of ``configs/<method>/`` (paths relative to the repo, sorted)."""
    root = osp.join(REPO, 'configs', method)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('_'))
        for f in filenames:
            if f.endswith('.py') and not f.startswith('_'):
                out.append(cc.rel(osp.join(dirpath, f)))
    return sorted(out)


def all_configs() -> 'OrderedDict[str, list]':
    return OrderedDict((m, method_configs(m)) for m in METHODS)


def metafile_path(method: str) -> str:
    return osp.join(REPO, 'configs', method, 'metafile.yml')


def load_yaml(path: str):
    import yaml
    with open(path) as f:
        return yaml.safe_load(f)


def listed_configs(method: str) -> list:
    """Config paths the existing metafile of ``method`` lists."""
    path = metafile_path(method)
    if not osp.isfile(path):
        return []
    data = load_yaml(path) or {}
    return [m.get('Config') for m in data.get('Models') or []]


# ----------------------------------------------------------------------------- one model
def _collection(method: str, cfg_rel: str) -> dict:
    cols = METHODS[method]
    name = osp.basename(cfg_rel)
    for c in cols:
        if c.get('Match') and c['Match'] in name:
            return c
    return cols[0]


def model_entry(method: str, cfg_rel: str, e: dict, paper: dict) -> dict:
    name = osp.splitext(osp.basename(cfg_rel))[0]
    info = e.get('info', {})
    col = _collection(method, cfg_rel)
    task = TASKS.get(info.get('scope'), None)
    train_data = DATASETS.get(info.get('train_dataset'), info.get('train_dataset'))
    test_data = DATASETS.get(info.get('test_dataset'), info.get('test_dataset'))
    md = OrderedDict()
    if train_data:
        md['Training Data'] = train_data
    if info.get('batch_size'):
        md['Batch Size'] = info['batch_size']
    if info.get('epochs'):
        md['Epochs'] = info['epochs']
    if info.get('iterations'):
        md['Iterations'] = info['iterations']
    if info.get('architecture'):
        md['Architecture'] = list(info['architecture'])
    if 'params' in e:
        md['Parameters'] = int(e['params'])
    if 'flops' in e:
        md['FLOPs'] = int(round(e['flops']))
        md['Input Size'] = list(e.get('input_shape') or e.get('shape'))
    if 'dynamic' in e:
        md['Dynamic'] = bool(e['dynamic'])
    r = e.get('realised')
    if r:
        md['Realised FLOPs'] = int(round(r['mean']))
        md['Realised FLOPs Note'] = (
            f"mean over {r['num_images']} {r['images']} images of "
            f"{r['shape'][0]}x{r['shape'][1]}, random (untrained) weights and gates "
            f"(get_flops.py); ratio to static {r['ratio']:.3f}")
    if paper.get('flops') is not None:
        md['Paper FLOPs'] = f"{paper['flops']} G"
    if paper.get('params') is not None:
        md['Paper Parameters'] = f"{paper['params']} M"
    if paper:
        src = paper.get('source', 'paper')
        if paper.get('note'):
            src += f"; {' '.join(str(paper['note']).split())}"
        md['Paper Source'] = src
    results = None
    if paper.get('metrics') and task:
        results = []
        metrics = OrderedDict(paper['metrics'])
        if task == 'Object Detection':
            box = OrderedDict((k, v) for k, v in metrics.items() if not k.startswith('mask'))
            mask = OrderedDict((k, v) for k, v in metrics.items() if k.startswith('mask'))
            if box:
                results.append(OrderedDict(Task='Object Detection', Dataset=test_data,
                                           Metrics=box))
            if mask:
                results.append(OrderedDict(Task='Instance Segmentation', Dataset=test_data,
                                           Metrics=mask))
        else:
            results.append(OrderedDict(Task=task, Dataset=test_data, Metrics=metrics))
    out = OrderedDict()
    out['Name'] = name
    out['In Collection'] = col['Name']
    out['Config'] = cfg_rel
    out['Metadata'] = md
    out['Results'] = results
    out['Weights'] = None
    return out


def collection_entry(col: dict, method: str, models: list) -> dict:
    data = []
    for m in models:
        td = m['Metadata'].get('Training Data')
        if m['In Collection'] == col['Name'] and td and td not in data:
            data.append(td)
    out = OrderedDict()
    out['Name'] = col['Name']
    out['Metadata'] = OrderedDict([('Training Data', data)])
    out['Paper'] = OrderedDict([('Title', col['Title']), ('URL', col['URL']),
                                ('Venue', col['Venue'])])
    out['README'] = f'configs/{method}/README.md'
    out['Code'] = OrderedDict([('URL', col['Code']), ('Version', _version())])
    return out


def _version():
    try:
        from mmdyn import __version__
        return f'v{__version__}'
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------- YAML
def _yaml_text(data: dict, method: str) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def od(dumper, d):
        return dumper.represent_dict(d.items())

    Dumper.add_representer(OrderedDict, od)
    body = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False, indent=2)
    header = (
        f'# Model index of configs/{method}/ (OpenMMLab format), written by\n'
        '# tools/misc/make_metafiles.py: do not edit by hand, re-run it.\n'
        '# Parameters: whole model. FLOPs: static, whole model, one image of `Input Size`,\n'
        '# 1 FLOP = 1 multiply-add (MACs), mmdyn.analysis.complexity (get_flops.py).\n'
        '# Realised FLOPs (representative configs only): mean per image on generated images\n'
        '# with random, untrained gates, not a trained model\'s figure.\n'
        '# Results / Paper FLOPs / Paper Parameters: THE PAPER\'S figures (its own FLOP\n'
        '# counting, see Paper Source); no weights were trained here, so Weights is null.\n')
    body = re.sub(r'^(\s*)Results:', r"\1# the paper's figures, not measured here\n\1Results:",
                  body, flags=re.M)
    return header + body


def _stem(c: str) -> str:
    return osp.splitext(osp.basename(c))[0]


def build_metafile(method: str, configs: list, cache: dict, papers: dict,
                   taken: set = frozenset()) -> dict:
    """``taken``: model names used by other folders (names must be unique in the index: a
    config named like one elsewhere, outside ``baselines``, is called ``<name>_<method>``)."""
    models = []
    for c in configs:
        e = cache.get(c, {})
        paper = papers.get(_stem(c), {}) or {}
        entry = model_entry(method, c, e, paper)
        if method != 'baselines' and entry['Name'] in taken:
            entry['Name'] = f"{entry['Name']}_{method}"
        models.append(entry)
    used = []
    for m in models:
        if m['In Collection'] not in used:
            used.append(m['In Collection'])
    cols = [collection_entry(col, method, models) for col in METHODS[method]
            if col['Name'] in used]
    return OrderedDict([('Collections', cols), ('Models', models)])


def model_index_text() -> str:
    lines = ['# Top-level model index (OpenMMLab format), written by tools/misc/make_metafiles.py.',
             'Import:']
    for m in METHODS:
        lines.append(f'- configs/{m}/metafile.yml')
    return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------------- README
def _paper_cell(p: dict) -> str:
    if not p:
        return '-'
    parts = []
    for k, v in (p.get('metrics') or {}).items():
        parts.append(f'{k} {v}')
    if p.get('flops') is not None:
        parts.append(f"{p['flops']} GFLOPs")
    if p.get('params') is not None:
        parts.append(f"{p['params']} M")
    return ', '.join(parts) if parts else '-'


def _task_short(info: dict) -> str:
    scope = info.get('scope')
    ds = DATASETS.get(info.get('test_dataset'), info.get('test_dataset') or '?')
    t = dict(mmseg='seg', mmdet='det', mmpretrain='cls').get(scope, scope or '?')
    if scope == 'mmdet' and info.get('has_mask'):
        t = 'det+mask'
    return f'{t} / {ds}'


def _rows(entries, cache, papers, with_realised):
    """Table rows of metafile model entries (the figures are read from the entries)."""
    rows = []
    for mod in entries:
        c = mod['Config']
        md = mod['Metadata']
        name = osp.basename(c)
        p = papers.get(_stem(c), {}) or {}
        shape = md.get('Input Size')
        params = md.get('Parameters')
        flops = md.get('FLOPs')
        row = [f'[{name}]({c})', _task_short(cache.get(c, {}).get('info', {})),
               'x'.join(str(s) for s in shape) if shape else '-',
               '-' if params is None else f'{params / 1e6:.2f}',
               '-' if flops is None else f'{flops / 1e9:.2f}']
        if with_realised:
            r = md.get('Realised FLOPs')
            ratio = (cache.get(c, {}).get('realised') or {}).get('ratio')
            row.append('-' if r is None else f'{r / 1e9:.2f} ({100 * ratio:.0f} %)')
        row.append(_paper_cell(p))
        rows.append('| ' + ' | '.join(row) + ' |')
    return rows


def readme_section(metafiles: dict, cache: dict, papers: dict) -> str:
    """The model-zoo section, from the metafiles' data (``{method: metafile dict}``)."""
    n_img = cc.REALISED_IMAGES
    out = [ZOO_START, '## Model zoo', '',
           'Generated from the metafiles (`configs/<method>/metafile.yml`, indexed by '
           '`model-index.yml`) by `python tools/misc/make_metafiles.py`; do not edit between the '
           'markers. No weights were trained here: there are no checkpoints, and every '
           'accuracy figure is **the paper\'s** (column "paper", with the paper\'s own FLOP '
           'counting and input size, see `Paper Source` in the metafiles and the method '
           'README).',
           '',
           '* **params**: whole model, millions. **static GFLOPs**: whole model, one image of '
           'the input size shown, every gate on, 1 FLOP = 1 multiply-add '
           '(`tools/analysis_tools/get_flops.py`).',
           f'* **realised GFLOPs**: mean per image of what actually ran, over {n_img} generated '
           'images (`get_flops.py`, no data set here), with **random, untrained weights and '
           'gates**, so it says what the code runs, not what a trained model would save '
           '(untrained gates keep nearly everything: e.g. DGE\'s initial gate picks the finest '
           'granularity with probability 0.95); measured for one representative dynamic config '
           'per method and codebase (bold), "-" elsewhere. In brackets: percent of the static '
           'figure.',
           '* **paper**: the paper\'s metric(s), GFLOPs and params as printed (its own counting '
           'and often another input size, e.g. DGE\'s ADE20K FLOPs at 512x2048, DoViT\'s '
           'Cityscapes FLOPs at 1024x2048).',
           '* Train / test (8 GPUs; any config of the table):', '',
           '```bash', 'bash tools/dist_train.sh CONFIG 8',
           'bash tools/dist_test.sh CONFIG CKPT 8', '```', '']
    head = ('| config | task / data | input | params (M) | static GFLOPs | realised GFLOPs '
            '| paper |\n| --- | --- | --- | --- | --- | --- | --- |')
    for method, data in metafiles.items():
        entries = data['Models']
        configs = [m['Config'] for m in entries]
        if not configs:
            continue
        cols = METHODS[method]
        if method == 'baselines':
            title = 'Static baselines'
            papers_txt = ', '.join(f"[{c['Name'].split(' ')[0]}]({c['URL']})" for c in cols)
        else:
            title = f"{cols[0]['Name']} ({cols[0]['Venue']})"
            papers_txt = f"[{cols[0]['Title']}]({cols[0]['URL']})"
        reps = [m for m in entries if m['Config'] in REPRESENTATIVES]
        out += [f'### {title}', '',
                f'{papers_txt}. {len(configs)} configs; details and decisions: '
                f'[configs/{method}/README.md](configs/{method}/README.md); index: '
                f'[configs/{method}/metafile.yml](configs/{method}/metafile.yml).', '']
        if reps:
            ex = reps[0]['Config']
            out += [head.replace('| config |', '| representative config |')]
            out += [re.sub(r'^\| \[([^\]]+)\]', r'| [**\1**]', r)
                    for r in _rows(reps, cache, papers, True)]
            out += ['', '```bash', f'bash tools/dist_train.sh {ex} 8',
                    f'bash tools/dist_test.sh {ex} work_dirs/{osp.splitext(osp.basename(ex))[0]}'
                    '/CKPT.pth 8', '```', '']
        out += ['<details>', f'<summary>All {len(configs)} {title} configs</summary>', '',
                head] + _rows(entries, cache, papers, True) + ['', '</details>', '']
    out.append(ZOO_END)
    return '\n'.join(out)


def update_readme(section: str, path: str = README) -> str:
    """The model-zoo page with its generated section replaced (or appended); links are made
    relative to the page's folder (``docs/``)."""
    section = section.replace('](configs/', '](../configs/')
    if not osp.exists(path):
        return '# mmdyn model zoo\n\n' + section + '\n'
    with open(path) as f:
        text = f.read()
    if ZOO_START in text and ZOO_END in text:
        a = text.index(ZOO_START)
        b = text.index(ZOO_END) + len(ZOO_END)
        return text[:a] + section + text[b:]
    m = re.search(r'^## Model zoo\s*$', text, flags=re.M)
    if m:  # a hand-written section: replace it up to the next level-2 heading
        nxt = re.search(r'^## ', text[m.end():], flags=re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        return text[:m.start()] + section + '\n\n' + text[end:].lstrip('\n')
    return text.rstrip('\n') + '\n\n' + section + '\n'


# ----------------------------------------------------------------------------- main
def load_papers() -> dict:
    data = load_yaml(PAPER_RESULTS) or {}
    return data


def check(configs_by_method: dict) -> list:
    """Problems: configs missing from their metafile, listed configs that do not exist,
    metafiles missing from model-index.yml."""
    problems = []
    for method, configs in configs_by_method.items():
        listed = listed_configs(method)
        for c in configs:
            if c not in listed:
                problems.append(f'missing from configs/{method}/metafile.yml: {c}')
        for c in listed:
            if not c or not osp.isfile(osp.join(REPO, c)):
                problems.append(f'configs/{method}/metafile.yml lists a missing config: {c}')
    if not osp.isfile(MODEL_INDEX):
        problems.append('model-index.yml does not exist')
    else:
        imports = (load_yaml(MODEL_INDEX) or {}).get('Import') or []
        for m in METHODS:
            if f'configs/{m}/metafile.yml' not in imports:
                problems.append(f'model-index.yml does not import configs/{m}/metafile.yml')
    return problems


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--check', action='store_true',
                   help='write nothing; exit 1 listing configs missing from the metafiles')
    p.add_argument('--no-measure', action='store_true',
                   help='do not measure: write what the cache holds (missing figures as -; '
                   'figures of configs changed since they were measured are kept, and listed)')
    p.add_argument('--no-realised', action='store_true',
                   help='do not measure realised FLOPs (the slowest part)')
    p.add_argument('--no-readme', action='store_true', help='leave docs/model_zoo.md alone')
    args = p.parse_args(argv)

    configs_by_method = all_configs()
    if args.check:
        problems = check(configs_by_method)
        for pr in problems:
            print(pr)
        n = sum(len(v) for v in configs_by_method.values())
        unmeasured = []
        for method in METHODS:
            path = metafile_path(method)
            data = (load_yaml(path) or {}) if osp.isfile(path) else {}
            unmeasured += [m['Config'] for m in data.get('Models') or []
                           if 'FLOPs' not in (m.get('Metadata') or {})]
        if unmeasured:  # not an error: the figures come with the next full run
            print(f'note: {len(unmeasured)} listed config(s) have no measured FLOPs yet',
                  file=sys.stderr)
        print(f'{len(problems)} problem(s); {n} configs in {len(METHODS)} folders',
              file=sys.stderr)
        return 1 if problems else 0

    flat = [c for cs in configs_by_method.values() for c in cs]
    cache = cc.load_cache()
    # config-derived info is cheap: always refresh what is missing (in memory with
    # --no-measure)
    cache = cc.ensure(flat, ['info'], cache, save=not args.no_measure,
                      keep_stale=args.no_measure)
    if args.no_measure:
        old = cc.stale(flat, cache)
        if old:
            print(f'{len(old)} config(s) changed since their figures were measured (written '
                  'as cached; a run without --no-measure measures them again): '
                  + ', '.join(old[:10]) + (' ...' if len(old) > 10 else ''), file=sys.stderr)
    if not args.no_measure:
        reps = [c for c in REPRESENTATIVES if c in flat]
        cache = cc.ensure(flat, ['params'], cache)
        cache = cc.ensure(flat, ['static'], cache)
        if not args.no_realised:
            cache = cc.ensure(reps, ['realised'], cache)
    papers = load_papers()
    metafiles = OrderedDict()
    for method, configs in configs_by_method.items():
        taken = {_stem(c) for m, cs in configs_by_method.items() if m != method for c in cs}
        metafiles[method] = data = build_metafile(method, configs, cache, papers, taken)
        with open(metafile_path(method), 'w') as f:
            f.write(_yaml_text(data, method))
    with open(MODEL_INDEX, 'w') as f:
        f.write(model_index_text())
    if not args.no_readme:
        text = update_readme(readme_section(metafiles, cache, papers))
        with open(README, 'w') as f:
            f.write(text)
    missing = [c for c in flat if 'flops' not in cache.get(c, {}) or 'params' not in
               cache.get(c, {})]
    if missing:
        print(f'{len(missing)} config(s) without measured params/FLOPs (shown as -): '
              + ', '.join(missing[:10]) + (' ...' if len(missing) > 10 else ''),
              file=sys.stderr)
    print(f'wrote {len(METHODS)} metafiles ({len(flat)} configs) and model-index.yml'
          + ('' if args.no_readme else ' and docs/model_zoo.md'), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
