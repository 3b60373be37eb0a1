"""Target files are checked against their schema (ours) and built by TVM (theirs): a bad file is
one clear error naming the file and the key, at `targets` or before any work."""

from __future__ import annotations

import json

import pytest

from tvm_pipeline.errors import InputFileError
from tvm_pipeline.target import spec as target_spec


def _write(folder, name: str, tvm: dict, pipeline: dict):
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**tvm, "pipeline": pipeline}))
    return path


BAD_FILES = {   # case: (tvm dict, pipeline object, what the message must name)
    "unknown-key": ({"kind": "llvm"}, {"vektor_bits": 128}, "vektor_bits"),
    "wrong-type": ({"kind": "llvm"}, {"vector_bits": "128"}, "vector_bits"),
    "bad-export": ({"kind": "llvm"}, {"export": "zip"}, "export"),
    "tvm-refuses": ({"kind": "llvm", "mcpux": "haswell"}, {}, "mcpux"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_target_file_is_named_with_its_key(cli, small_v2, tmp_path, case):
    tvm, pipeline, culprit = BAD_FILES[case]
    path = _write(tmp_path, "mine", tvm, pipeline)
    res = cli("compile", small_v2, "--target", path, "-o", tmp_path / "out.tvm")
    assert res.code == InputFileError.exit_code, res.err
    assert str(path) in res.err and culprit in res.err and "Error" not in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json"]
    with pytest.raises(InputFileError, match=culprit):
        target_spec.resolve_target(str(path)).to_tvm()


def test_targets_builds_every_file_so_a_bad_one_fails_there(cli, tmp_path, monkeypatch):
    for good in target_spec.targets_dir().glob("x86-*.json"):
        (tmp_path / good.name).write_text(good.read_text())
    assert cli("targets").code == 0
    _write(tmp_path, "broken", {"kind": "llvm", "mcpu": 5}, {})
    monkeypatch.setattr(target_spec, "targets_dir", lambda: tmp_path)
    res = cli("targets")
    assert res.code == InputFileError.exit_code and "broken.json" in res.err and "mcpu" in res.err
