"""``report``: one self-contained file (HTML or Markdown, the chart inlined as a data URI) with an
artifact's compile report, a fresh validation, a benchmark and its top kernels from a profile."""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..paths import atomic_write, check_new_file

FORMATS = {".html": "html", ".htm": "html", ".md": "md"}
SOURCE_COLORS = {"tuned": "#2b8a3e", "borrowed": "#1971c2", "default": "#f08c00", "naive": "#c92a2a"}


@dataclass
class ReportData:
    artifact: object            # run.artifact.Artifact
    validation: object          # run.validate.ValidationReport
    bench: object               # run.bench.BenchResult
    profile: object             # observe.profile.ProfileResult


def check_output(path: str | os.PathLike) -> Path:
    """The report's path, checked before any work: a known suffix, a place that can take it."""
    path = check_new_file(path, "the report", "-o")
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"Cannot tell the report format of {path}: the name must end in .html or "
                         ".md.", hint="For example: -o report.html")
    return path


def top_kernels_chart(profile, top: int = 12) -> bytes:
    """PNG: the slowest kernels, bars colored by schedule source, labeled with their main op."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
    from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel

    kernels = sorted(profile.kernels, key=lambda k: -k.ms)[:top][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(kernels) + 1.4), dpi=100)
    ax.barh(range(len(kernels)), [k.ms for k in kernels],
            color=[SOURCE_COLORS.get(k.source, "#868e96") for k in kernels])
    ax.set_yticks(range(len(kernels)),
                  [f"{k.op_type}: {k.nodes[0][0] if k.nodes else k.name}"[:48] for k in kernels],
                  fontsize=8)
    ax.set_xlabel("ms per model run (median)")
    ax.set_title(f"Top kernels of {Path(profile.artifact).name} on {profile.target} "
                 f"({profile.kernel_ms:.2f} ms in kernels, {profile.model_ms:.2f} ms per run)",
                 fontsize=9)
    ax.legend(handles=[Patch(color=c, label=s) for s, c in SOURCE_COLORS.items()], fontsize=8,
              loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _sections(data: ReportData) -> list[tuple[str, str]]:
    """(title, preformatted text) of each part of the report."""
    meta = data.artifact.metadata
    kernels = meta.get("kernels", {})
    groups = ", ".join(f"{kernels[s]['count']} {s} ({100 * kernels[s]['work_share']:.0f}% of the "
                       "work)" for s in ("tuned", "borrowed", "default", "naive") if s in kernels)
    compile_text = "\n".join([
        f"model      {meta['model'].get('name')} ({meta['model'].get('path')})",
        f"target     {data.artifact.target_name}, TVM {meta.get('tvm_version')}",
        "inputs     " + ", ".join(f"{t['name']} {tuple(t['shape'])} {t['dtype']}"
                                  for t in meta["inputs"]),
        f"kernels    {kernels.get('total')}: {groups}",
        f"built      {meta.get('created')} on {meta.get('built_on')} in "
        f"{meta.get('build_seconds')} s"])
    return [("Compile", compile_text), ("Validation against ONNX Runtime", data.validation.format()),
            ("Benchmark (same process, alternating blocks)", data.bench.format()),
            ("Profile", data.profile.format(top=15))]


def render_markdown(data: ReportData, chart: bytes) -> str:
    lines = [f"# {Path(str(data.artifact.path)).name}: tvm-pipeline report", ""]
    for title, text in _sections(data):
        lines += [f"## {title}", "", "```", text, "```", ""]
    lines += ["## Top kernels", "",
              f"![top kernels](data:image/png;base64,{base64.b64encode(chart).decode()})", ""]
    return "\n".join(lines)


def render_html(data: ReportData, chart: bytes) -> str:
    name = html.escape(Path(str(data.artifact.path)).name)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{name}</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
             "pre{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:85%}</style></head>",
             f"<body><h1>{name}: tvm-pipeline report</h1>"]
    for title, text in _sections(data):
        parts.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre>")
    parts.append("<h2>Top kernels</h2><img alt='top kernels' src='data:image/png;base64,"
                 f"{base64.b64encode(chart).decode()}'></body></html>")
    return "\n".join(parts)


def write_report(path: Path, data: ReportData) -> Path:
    chart = top_kernels_chart(data.profile)
    render = render_html if FORMATS[path.suffix.lower()] == "html" else render_markdown
    atomic_write(path, render(data, chart))
    return path
