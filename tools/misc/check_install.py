"""Is everything ``tools/install.sh`` installs already there? Exit 0 if so (install.sh then
skips pip: seconds instead of a minute), else print what is missing and exit 1 (install.sh then
runs pip as usual).

Checked, without importing the packages: every requirement of requirements/build.txt,
mminstall.txt, runtime.txt and tests.txt and the packages install.sh names itself, each within
requirements/constraints.txt; mmdyn installed in editable mode from this checkout; then (one
import of torch) that torchvision's and mmcv 2.1.0's compiled ops load. Anything in doubt counts
as missing.
"""
import json
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REQUIREMENT_FILES = ('build.txt', 'mminstall.txt', 'runtime.txt', 'tests.txt')
# what install.sh installs by name (besides the requirement files)
NAMED = ('numpy<2', 'opencv-python-headless', 'addict', 'matplotlib', 'pyyaml', 'rich',
         'termcolor', 'yapf', 'mmengine==0.10.7', 'packaging', 'Pillow')
# install.sh keeps any torch / torchvision pair whose ops load (checked there)
NOT_PINNED_HERE = ('torch', 'torchvision')


def read_requirements(name):
    with open(osp.join(REPO, 'requirements', name)) as f:
        return [ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip()]


def missing_requirements():
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    constraints = {}
    for line in read_requirements('constraints.txt'):
        r = Requirement(line)
        constraints[canonicalize_name(r.name)] = r.specifier
    wanted = [ln for f in REQUIREMENT_FILES for ln in read_requirements(f)] + list(NAMED)
    problems = []
    for line in wanted:
        r = Requirement(line)
        key = canonicalize_name(r.name)
        if key in NOT_PINNED_HERE:
            continue
        spec = r.specifier & constraints.get(key, r.specifier)
        try:
            version = metadata.version(r.name)
        except metadata.PackageNotFoundError:
            problems.append(f'{r.name}: not installed')
            continue
        if not spec.contains(version, prereleases=True):
            problems.append(f'{r.name} {version}: wanted {spec}')
    return problems


def mmdyn_editable_here():
    """None if pip installed mmdyn in editable mode from this checkout (an ``mmdyn.egg-info``
    that ``setup.py egg_info`` leaves in the checkout is not an install and is skipped)."""
    from importlib import metadata
    urls = []
    for dist in metadata.distributions(name='mmdyn'):
        direct = json.loads(dist.read_text('direct_url.json') or '{}')
        if direct:
            urls.append((direct.get('url', ''), bool(direct.get('dir_info', {}).get('editable'))))
    if not urls:
        return 'mmdyn: not installed'
    for url, editable in urls:
        if editable and url.startswith('file://') and \
                osp.realpath(url[len('file://'):]) == osp.realpath(REPO):
            return None
    url, editable = urls[0]
    if not editable:
        return 'mmdyn: not installed in editable mode'
    return f'mmdyn: installed from {url[len("file://"):]}, not from {REPO}'


def compiled_ops_load():
    try:
        import mmcv
        import torch
        from mmcv.ops import nms  # noqa: F401
        from torchvision.ops import nms as tv_nms
        tv_nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as e:
        return f'compiled ops do not load ({type(e).__name__}: {e})'
    if mmcv.__version__ != '2.1.0':
        return f'mmcv {mmcv.__version__}: wanted 2.1.0 with compiled ops'
    return None


def main():
    try:
        problems = missing_requirements()
        editable = mmdyn_editable_here()
    except Exception as e:  # packaging missing, an unreadable file: let pip decide
        problems, editable = [f'cannot check ({type(e).__name__}: {e})'], None
    if editable:
        problems.append(editable)
    if not problems:  # the imports take seconds: only when everything else is there
        ops = compiled_ops_load()
        problems += [ops] if ops else []
    for p in problems:
        print(f'[mmdyn install] to install: {p}')
    return 0 if not problems else 1


if __name__ == '__main__':
    sys.exit(main())
