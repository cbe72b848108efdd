"""Rebuild TorchRL's C++ extension against the installed torch when the shipped one does not load.

TorchRL's wheels carry a compiled extension (the segment trees behind
``PrioritizedSampler``) built against one torch release; with another torch its import
fails with an undefined symbol and prioritized replay is unavailable. The wheel also
ships the extension's sources (``torchrl/csrc``), so this script compiles them against
the torch in this virtual environment and puts the result where TorchRL looks for it.
It does nothing when the shipped extension already loads.

Usage: python tools/build_torchrl_extension.py
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BUILD_SCRIPT = """
import sys
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

source_dir, build_dir = sys.argv[1], sys.argv[2]
setup(
    name="torchrl-extension",
    ext_modules=[
        CppExtension(
            "_torchrl",
            [f"{source_dir}/pybind.cpp", f"{source_dir}/utils.cpp"],
            extra_compile_args=["-O2", "-w"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
    script_args=["-q", "build_ext", "--build-lib", build_dir, "--build-temp", f"{build_dir}/tmp"],
)
"""


def extension_loads() -> bool:
    """Whether ``torchrl._torchrl`` imports in a fresh interpreter (an in-process retry would be cached)."""
    probe = "import torch, torchrl._torchrl"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def main() -> int:
    if extension_loads():
        print("torchrl C++ extension loads; nothing to build")
        return 0
    spec = importlib.util.find_spec("torchrl")
    if spec is None or spec.origin is None:
        print("error: torchrl is not installed in this environment", file=sys.stderr)
        return 1
    package = Path(spec.origin).parent
    print(f"torchrl C++ extension does not load with this torch; compiling it from {package / 'csrc'} (about a minute)")
    with tempfile.TemporaryDirectory() as build_dir:
        subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(package / "csrc"), build_dir], check=True)
        built = next(Path(build_dir).glob("_torchrl*.so"))
        for old in package.glob("_torchrl*.so"):
            old.unlink()
        shutil.copy2(built, package / built.name)
    if not extension_loads():
        print("error: the rebuilt torchrl extension still does not load", file=sys.stderr)
        return 1
    print(f"torchrl C++ extension rebuilt: {package / built.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
