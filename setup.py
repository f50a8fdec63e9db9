import os.path as osp

from setuptools import find_packages, setup


def read_version():
    ns = {}
    with open(osp.join(osp.dirname(__file__), 'mmdyn', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def parse_requirements(fname):
    reqs = []
    with open(osp.join(osp.dirname(__file__), 'requirements', fname)) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


def mm_requirement(name):
    """The pinned line of one OpenMMLab package in requirements/mminstall.txt."""
    found = [r for r in parse_requirements('mminstall.txt')
             if r.split('=')[0].split('<')[0].split('>')[0].strip() == name]
    if len(found) != 1:
        raise RuntimeError(f'requirements/mminstall.txt must pin {name} once, found {found}')
    return found[0]


# mmengine and mmcv (with compiled ops) are the core; each codebase is an extra, so
# `pip install -e .[all]` works on a machine that already has a compiled mmcv.
EXTRAS = {
    'det': [mm_requirement('mmdet')],
    'seg': [mm_requirement('mmsegmentation')],
    'cls': [mm_requirement('mmpretrain')],
    'tests': parse_requirements('tests.txt'),
    'optional': parse_requirements('optional.txt'),
}
EXTRAS['mim'] = parse_requirements('mminstall.txt')
EXTRAS['all'] = sorted({r for k in ('det', 'seg', 'cls', 'tests', 'optional') for r in EXTRAS[k]})

setup(
    name='mmdyn',
    version=read_version(),
    description='Dynamic vision transformers for dense prediction on OpenMMLab 2.0',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'projects', 'work_dirs')),
    python_requires='>=3.8',
    install_requires=parse_requirements('runtime.txt') + [mm_requirement('mmengine'),
                                                          mm_requirement('mmcv')],
    extras_require=EXTRAS,
    zip_safe=False,
)
