"""How a compiled module becomes a shared library for its device: one exporter per ``export`` kind.

``native`` links with this machine's C++ compiler; ``cross`` with the cross compiler a target file
names (a Debian package such as ``g++-aarch64-linux-gnu``); ``ndk`` with the Android NDK's clang.
Each exporter returns the ``fcompile`` that ``export_library`` takes, or raises a ``ToolchainError``
naming what to install. Exporters are looked up in ``EXPORTERS`` by the target file's ``export`` key.
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ToolchainError, UsageError
from .spec import TargetSpec

NDK_VARIABLES = ("TVM_NDK_CC", "ANDROID_NDK_HOME", "ANDROID_NDK_ROOT")
NDK_CLANG_GLOB = "toolchains/llvm/prebuilt/*/bin/{triple}{api}-clang++"


@dataclass(frozen=True)
class Toolchain:
    """The compiler that links the host code of a module (``fcompile`` for ``export_library``)."""

    export: str
    compiler: str | None              # None: TVM's default (the host's g++)

    def fcompile(self):
        if self.compiler is None:
            return None
        from tvm.support import cc  # pylint: disable=import-outside-toplevel

        return cc.cross_compiler(self.compiler)

    def to_dict(self) -> dict:
        return {"export": self.export, "compiler": self.compiler}


def _native(spec: TargetSpec, ndk: str | None) -> Toolchain:  # pylint: disable=unused-argument
    if shutil.which("g++") is None:
        raise ToolchainError("No C++ compiler (g++) on PATH: TVM links compiled modules with it.",
                             hint="Install it: apt-get install g++.")
    return Toolchain("native", None)


def _cross(spec: TargetSpec, ndk: str | None) -> Toolchain:  # pylint: disable=unused-argument
    if not spec.cross_compiler:
        raise UsageError(f"Target file {spec.path} says export \"cross\" but names no cross_compiler.",
                         hint='Add "cross_compiler": "aarch64-linux-gnu-g++" (or similar) to its '
                              '"pipeline" dict.')
    found = shutil.which(spec.cross_compiler)
    if found is None:
        package = spec.toolchain_package or "the package that provides it"
        raise ToolchainError(
            f"Target {spec.name} needs the cross compiler {spec.cross_compiler}, which is not on PATH.",
            hint=f"Install it: apt-get install {package}.")
    return Toolchain("cross", found)


def _ndk_clang(root: Path, triple: str, api: int) -> str | None:
    matches = sorted(glob.glob(str(root / NDK_CLANG_GLOB.format(triple=triple, api=api))))
    return matches[-1] if matches else None


def _ndk(spec: TargetSpec, ndk: str | None) -> Toolchain:
    triple, api = spec.ndk_triple, spec.ndk_api
    tried = []
    places = [("--ndk", ndk)] if ndk else [(var, os.environ.get(var)) for var in NDK_VARIABLES]
    for origin, value in places:     # an explicit --ndk is the only place looked at
        if not value:
            continue
        path = Path(value)
        compiler = str(path) if path.is_file() else _ndk_clang(path, triple, api)
        if compiler and os.access(compiler, os.X_OK):
            return Toolchain("ndk", compiler)
        tried.append(f"{origin}={value}")
    where = ("; tried " + ", ".join(tried)) if tried else ""
    raise ToolchainError(
        f"Target {spec.name} links with the Android NDK's clang ({triple}{api}-clang++), and no "
        f"NDK was found{where}.",
        hint="Install the Android NDK (r25 or newer, from Android Studio's SDK manager or the NDK "
             "download page; it is not a Debian or PyPI package), then pass --ndk NDK_ROOT or set "
             f"TVM_NDK_CC=NDK_ROOT/toolchains/llvm/prebuilt/linux-x86_64/bin/{triple}{api}-clang++.")


EXPORTERS: dict[str, Callable[[TargetSpec, str | None], Toolchain]] = {
    "native": _native,
    "cross": _cross,
    "ndk": _ndk,
}


def toolchain_for(spec: TargetSpec, ndk: str | None = None) -> Toolchain:
    """The toolchain that links modules for ``spec`` (``ndk``: an NDK root or its clang++)."""
    try:
        exporter = EXPORTERS[spec.export]
    except KeyError:
        raise UsageError(f"Target file {spec.path} has unknown export \"{spec.export}\".",
                         hint=f"Use one of: {', '.join(EXPORTERS)}.") from None
    return exporter(spec, ndk)
