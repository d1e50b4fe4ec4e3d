"""Builds hudd_core._C with CMake (OpenMP always, CUDA when nvcc is found).

HUDD_CUDA=auto (default) compiles csrc/cuda/*.cu when nvcc is found, =on requires it,
=off skips it. HUDD_BUILD_DIR keeps an incremental build folder (default: build/cmake).
HUDD_CUDA_ARCHS overrides the CUDA architectures (CMake syntax, e.g. "90-real" for a quick
build on one H100/H200; the default in CMakeLists.txt covers sm_75 .. sm_120 + PTX).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def find_nvcc() -> str | None:
    for candidate in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def cuda_wanted() -> tuple[bool, str | None]:
    mode = os.environ.get("HUDD_CUDA", "auto").lower()
    if mode not in {"auto", "on", "off"}:
        raise SystemExit(f"HUDD_CUDA must be auto, on or off, not {mode!r}")
    nvcc = None if mode == "off" else find_nvcc()
    if mode == "on" and nvcc is None:
        raise SystemExit("HUDD_CUDA=on but nvcc was not found (PATH, /usr/local/cuda/bin)")
    return nvcc is not None, nvcc


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(os.environ.get("HUDD_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        with_cuda, nvcc = cuda_wanted()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DHUDD_WITH_CUDA={'ON' if with_cuda else 'OFF'}",
        ]
        if nvcc:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        if os.environ.get("HUDD_CUDA_ARCHS"):
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ['HUDD_CUDA_ARCHS']}")
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        if (build_dir / "CMakeCache.txt").exists():
            cache = (build_dir / "CMakeCache.txt").read_text()
            if "CMAKE_GENERATOR:INTERNAL=Ninja" in cache and "-G" not in args:
                shutil.rmtree(build_dir)
                build_dir.mkdir(parents=True)
        print(f"hudd_core: building _C with CUDA={'on' if with_cuda else 'off'} in {build_dir}")
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_dir, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)


setup(ext_modules=[Extension("hudd_core._C", sources=[])], cmdclass={"build_ext": CMakeBuild})
