"""``tvm-pipeline sweep``: a real 2x2 MobileNet V1 sweep (alpha 0.25, 0.5 x resolution 96, 128) built,
compiled, validated and timed, writing report.md, sweep.json and the PNG plots; failures recorded
per variant; bad arguments are one-paragraph usage errors before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from tvm_pipeline.errors import UsageError, ValidationError
from tvm_pipeline.frontend.analysis import analyze
from tvm_pipeline.models import MobileNetSpec, build_mobilenet
from tvm_pipeline.observe import sweep as sw
from tvm_pipeline.run.bench import BenchResult, LatencyStats

ROOT = Path(__file__).resolve().parents[2]
ALPHAS, RESOLUTIONS = (0.25, 0.5), (96, 128)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The CLI in its own process, as a user runs it (few runs: this checks the plumbing)."""
    base = tmp_path_factory.mktemp("sweep")
    out = base / "v1-sweep"
    env = {**os.environ, "TVM_PIPELINE_LOGS": str(base / "logs")}
    proc = subprocess.run(
        [sys.executable, "-m", "tvm_pipeline", "sweep", "--arch", "v1", "--alpha", "0.25,0.5",
         "--resolution", "96,128", "--runs", "5", "--warmup", "1", "--samples", "1", "-o", str(out)],
        cwd=base, env=env, capture_output=True, text=True, timeout=1500)
    return proc, out


def test_sweep_exits_0_and_writes_report_json_and_plots(swept):
    proc, out = swept
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("report.md", "sweep.json", "latency_vs_macs.png", "latency_vs_params.png",
                 "scaling.png", "ratio.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes().startswith(PNG), name
    assert not list(out.glob(".*.tmp")), "atomic writes left temp files"
    assert "4 variants, 4 measured, 0 failed" in proc.stdout and "Traceback" not in proc.stderr
    assert "variant" in proc.stderr   # the tqdm progress bar


def test_sweep_json_has_every_variant_measured_with_the_models_costs(swept):
    _, out = swept
    data = json.loads((out / "sweep.json").read_text())
    assert data["kind"] == sw.KIND and data["complete"] and data["arch"] == "v1"
    variants = data["variants"]
    assert [(v["alpha"], v["resolution"]) for v in variants] == \
        [(a, r) for a in ALPHAS for r in RESOLUTIONS]
    for v in variants:
        cost = analyze(build_mobilenet(MobileNetSpec("v1", v["alpha"], v["resolution"])))
        assert v["status"] == "ok", v["error"]
        assert (v["params"], v["macs"]) == (cost.params, cost.macs), v["name"]
        assert v["depthwise_macs"] == cost.macs_by_kind["depthwise"] > 0
        assert v["pointwise_macs"] == cost.macs_by_kind["pointwise"] > v["depthwise_macs"]
        assert v["tvm_median_ms"] > 0 and v["ort_median_ms"] > 0 and v["ratio"] > 0
        assert v["validation"]["passed"] and v["bench"]["runs"] == 5
        assert Path(v["artifact"]).is_dir()
        assert v["cost_factor"] == pytest.approx(v["alpha"] ** 2 * (v["resolution"] / 224) ** 2)
    assert data["reference_variant"] == "mobilenet_v1_0.5_128"
    largest = [row for row in data["scaling"] if row["name"] == data["reference_variant"]][0]
    assert largest["cost_ratio"] == largest["mac_ratio"] == largest["tvm_ratio"] == 1.0


def test_report_states_formulas_machine_method_and_one_row_per_variant(swept):
    _, out = swept
    report = (out / "report.md").read_text()
    for text in ("D_K^2 * M * D_F^2", "M * N * D_F^2", "alpha^2 * rho^2", "## Machine and target",
                 "x86", "same process run", "warm-up", "reliable", "![scaling.png](scaling.png)"):
        assert text in report, text
    rows = [line for line in report.splitlines() if line.startswith(("| 0.25 | ", "| 0.5 | "))]
    assert len(rows) == 2 * len(ALPHAS) * len(RESOLUTIONS)    # variant table + scaling table
    assert sum("PASSED" in row for row in rows) == 4


# --- fast checks: no compilation ---------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--arch", "v3"], "Unknown --arch 'v3'"),
    (["--arch", "v2", "--alpha", "0,0.5"], "--alpha 0 is not valid"),
    (["--arch", "v1", "--alpha", "0.5,abc"], "'abc' is not a number"),
    (["--arch", "v1", "--resolution", ""], "the list is empty"),
    (["--arch", "v1", "--resolution", "96,16"], "--resolution 16 is not valid"),
    (["--arch", "v1", "--resolution", "96.5"], "not an integer"),
])
def test_bad_arguments_are_usage_errors_before_any_work(cli, tmp_path, args, message):
    result = cli("sweep", *args, "-o", tmp_path / "out")
    assert result.code == UsageError.exit_code, result.err
    assert message in result.err and result.err.startswith("error: ")
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_folder_that_is_not_a_sweep(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = cli("sweep", "--arch", "v1", "--alpha", "0.25", "--resolution", "96",
                 "-o", tmp_path)
    assert result.code == UsageError.exit_code and "Refusing" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _fake_verbs(fail: str):
    """Compile/bench stand-ins: the variant named ``fail`` disagrees with ONNX Runtime; the
    others 'run' in a time proportional to their multiply-adds."""
    def compile_variant(model_path, spec, output):
        if Path(model_path).stem == fail:
            raise ValidationError("logits differ from ONNX Runtime by 3.2 (atol 1e-4).")
        Path(output).mkdir(parents=True, exist_ok=True)
        build = SimpleNamespace(by_source=lambda: {"tuned": [], "default": ["k"]}, kernels_total=1)
        return SimpleNamespace(seconds=0.1, artifact=SimpleNamespace(path=Path(output)),
                               build=build, validation=None, validation_skipped="fake")

    def bench_variant(artifact, model_path):
        ms = analyze(onnx.load(model_path)).macs / 1e7
        stats = LatencyStats.from_seconds([ms / 1e3] * 3)
        return BenchResult(stats, LatencyStats.from_seconds([ms / 2e3] * 3), 2, 1, 0.0)

    return sw.Verbs(compile_variant, bench_variant)


def test_a_failing_variant_is_reported_and_the_sweep_goes_on(tmp_path):
    options = sw.SweepOptions("v2", alphas=(0.25, 0.35), resolutions=(32, 48),
                              output=str(tmp_path / "out"), runs=3)
    result = sw.sweep(options, _fake_verbs(fail="mobilenet_v2_0.35_32"))
    assert [v.status for v in result.variants] == ["ok", "ok", "failed", "ok"]
    failed = result.failed[0]
    assert failed.stage == "validate" and "logits differ" in failed.error
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Failed variants" in report and "logits differ from ONNX Runtime" in report
    assert "FAILED (validate)" in report
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["variants"][2]["status"] \
        == "failed"
    assert result.exponents()["tvm"] == pytest.approx(1.0)   # fake latency = MACs / 1e7
    assert (tmp_path / "out" / "ratio.png").read_bytes().startswith(PNG)
    # a second sweep into the same folder is allowed (it is a sweep's)
    again = sw.sweep(options, _fake_verbs(fail=""))
    assert not again.failed and "4 measured, 0 failed" in again.format()
