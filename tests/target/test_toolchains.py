"""Cross-compilation: target files for ARM, the toolchain per export kind, and clear errors."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tvm_pipeline.api import compile as compile_model, prepare
from tvm_pipeline.run.artifact import load_artifact
from tvm_pipeline.errors import InputFileError, ToolchainError, UsageError
from tvm_pipeline.target.spec import list_targets, load_target_file, resolve_target
from tvm_pipeline.target.toolchains import toolchain_for

ARM = ("aarch64", "rpi4", "rpi5", "android-arm64", "armv7")
ELF_MACHINE = {"aarch64": 183, "armv7l": 40}   # e_machine: EM_AARCH64, EM_ARM
NDK_VARS = ("TVM_NDK_CC", "ANDROID_NDK_HOME", "ANDROID_NDK_ROOT")


def elf_header(path) -> tuple[int, int]:
    """(ELF class: 1 = 32-bit, 2 = 64-bit; e_machine) of a shared library."""
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return data[4], int.from_bytes(data[18:20], "little")


def test_arm_targets_are_complete_target_dicts():
    specs = {t.name: t for t in list_targets()}
    for name in ARM:
        spec = specs[name]
        assert spec.description and spec.rpc_key and spec.arch in ELF_MACHINE
        assert spec.export in ("cross", "ndk") and not spec.runs_on_host
        assert isinstance(spec.tvm["num-cores"], int)          # MetaSchedule needs it
        target = spec.to_tvm()                                  # TVM accepts the dict as is
        assert target.kind.name == "llvm" and "mtriple" in spec.tvm


@pytest.mark.parametrize("name", ["rpi4", "armv7"])
def test_cross_compiled_artifact_is_for_the_device(name, small_v2, tmp_path):
    spec = resolve_target(name)
    result = compile_model(prepare(small_v2, spec), tmp_path / f"{name}.tvm")
    art = result.artifact
    assert result.validation is None and "does not run on this machine" in result.validation_skipped
    assert art.metadata["target"]["arch"] == spec.arch
    assert art.metadata["toolchain"]["compiler"].endswith(spec.cross_compiler)
    elf_class, machine = elf_header(art.library)
    assert machine == ELF_MACHINE[spec.arch]
    assert elf_class == (2 if spec.arch == "aarch64" else 1)
    with pytest.raises(UsageError, match=f"runs on {spec.arch}; this machine is"):
        load_artifact(art.path).runner()


def test_android_without_ndk_names_the_missing_toolchain(cli, small_v2, monkeypatch, tmp_path):
    for var in NDK_VARS:
        monkeypatch.delenv(var, raising=False)
    res = cli("compile", small_v2, "--target", "android-arm64", "-o", tmp_path / "a.tvm")
    assert res.code == ToolchainError.exit_code
    assert "Android NDK" in res.err and "TVM_NDK_CC" in res.err and "--ndk" in res.err
    assert "compiling" not in res.err            # it failed before building anything
    assert not (tmp_path / "a.tvm").exists()


def test_remote_tuning_for_android_takes_ndk_and_checks_it_first(cli, small_v2, tmp_path):
    res = cli("tune", small_v2, "--target", "android-arm64", "--tracker", "127.0.0.1:9",
              "--ndk", tmp_path / "no-ndk")
    assert res.code == ToolchainError.exit_code
    assert "tried --ndk=" in res.err and str(tmp_path / "no-ndk") in res.err


def test_ndk_is_found_from_its_root_layout(tmp_path, monkeypatch):
    """An NDK root is searched for the target's triple and API level (as the NDK lays it out)."""
    for var in NDK_VARS:
        monkeypatch.delenv(var, raising=False)
    spec = resolve_target("android-arm64")
    bindir = tmp_path / "ndk" / "toolchains" / "llvm" / "prebuilt" / "linux-x86_64" / "bin"
    bindir.mkdir(parents=True)
    clang = bindir / "aarch64-linux-android28-clang++"
    os.symlink(shutil.which("g++"), clang)
    assert toolchain_for(spec, str(tmp_path / "ndk")).compiler == str(clang)
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "ndk"))
    assert toolchain_for(spec).compiler == str(clang)
    with pytest.raises(ToolchainError, match="tried --ndk="):
        toolchain_for(spec, str(tmp_path / "nowhere"))


def test_missing_cross_compiler_names_the_debian_package(tmp_path):
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"kind": "llvm", "mtriple": "riscv64-linux-gnu", "num-cores": 4,
                                "pipeline": {"export": "cross",
                                             "cross_compiler": "riscv64-linux-gnu-g++-missing",
                                             "toolchain_package": "g++-riscv64-linux-gnu",
                                             "arch": "riscv64"}}))
    with pytest.raises(ToolchainError, match="apt-get install g\\+\\+-riscv64-linux-gnu"):
        toolchain_for(load_target_file(path))
    path.write_text(json.dumps({"kind": "llvm", "pipeline": {"export": "telepathy"}}))
    with pytest.raises(InputFileError, match="board.json.*\"export\" must be one of"):
        load_target_file(path)        # refused when the file is read, before any work
