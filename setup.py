import tomllib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

with open(Path(__file__).parent / "pyproject.toml", "rb") as pyproject:
    FASTCOPY_LIBRARIES = tomllib.load(pyproject)["tool"]["vmcore-collector"]["fastcopy-libraries"]

setup(
    name="vmcore-collector",
    version="0.1.0",
    description="Collects Linux crash dumps (/proc/vmcore) into kdump-compressed files",
    packages=find_packages(include=["collector", "collector.*"]),
    ext_modules=cythonize(
        [Extension("collector._fastcopy", ["_fastcopy.pyx"], extra_compile_args=["-O3"],
                   libraries=FASTCOPY_LIBRARIES)],
        compiler_directives={"language_level": "3"},
    ),
    # What mypy and ruff check against (pyproject.toml): Debian 12's python3, which the capture
    # environment runs.
    python_requires=">=3.11",
    # paramiko: 3.2 brought PKey.from_path; the SSH target's private hooks
    # (collector/targets/ssh/paramiko_adapter.py) are the same from 3.2 to 5.1, and a new major
    # version may change them (tests/test_paramiko_adapter.py checks the installed one).
    # python-lzo and cramjam: the lzo and snappy pages of kdump files that makedumpfile -l and -p
    # write (read as input, never written); python-lzo builds against liblzo2-dev (./dev).
    install_requires=["zstandard>=0.19", "paramiko>=3.2,<6", "python-lzo>=1.15,<2", "cramjam>=2.7,<3"],
    # mypy and ruff within a minor version: a newer one checks more, and ./dev test fails on
    # what it finds, so moving to it is a change of its own.
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "drgn>=0.0.25", "mypy>=2.4,<2.5", "ruff>=0.17,<0.18"],
                    "bench": ["matplotlib>=3.5"]},
    entry_points={"console_scripts": [
        "vmcore-save=collector.cli:main",
        "vmcore-rearrange=collector.cli:rearrange_main",
        "vmcore-collector=collector.capture.arm:main",
    ]},
    # The dracut module, the example configuration, the unit that arms at boot, the man pages.
    data_files=[
        ("share/vmcore-collector/99vmcore-collector", [f"initramfs/99vmcore-collector/{name}" for name in (
            "module-setup.sh", "capture-init.sh", "udhcpc-script.sh")]),
        ("share/vmcore-collector", ["initramfs/vmcore-collector.conf", "initramfs/vmcore-collector.service"]),
        # collector/manpages.py's output (python -m collector.manpages; tests/test_manpages.py
        # checks these files are it).
        ("share/man/man8", ["man/vmcore-save.8", "man/vmcore-rearrange.8", "man/vmcore-collector.8"]),
        ("share/man/man5", ["man/vmcore-collector.conf.5"]),
    ],
)
