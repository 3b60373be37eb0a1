"""``report``: one self-contained file with compile report, validation, benchmark and top kernels."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_report_is_one_self_contained_file(cli, small_v2_artifact, tmp_path, suffix):
    out = tmp_path / f"report{suffix}"
    result = cli("report", small_v2_artifact.path, "-o", out, "--runs", "3")
    assert result.code == 0, result.err
    text = out.read_text()
    for section in ("Compile", "Validation against ONNX Runtime", "Benchmark", "Profile",
                    "Top kernels"):
        assert section in text
    assert "PASSED" in text and "data:image/png;base64," in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]     # nothing else written


def test_report_refuses_an_unknown_format_before_any_work(cli, small_v2_artifact, tmp_path):
    result = cli("report", small_v2_artifact.path, "-o", tmp_path / "report.pdf")
    assert result.code == 2 and ".html or .md" in result.err
    assert not list(tmp_path.iterdir())
