"""Results of the device checks (shared by ``check`` and ``numerics``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ToolchainError
from .kernels import DeviceCode

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class KernelFailure:
    kernel: str
    message: str


@dataclass
class CheckResult:
    check: str                      # "nvcc", "clang", "pocl-build", "pocl-numerics"
    status: str                     # passed / failed / skipped
    detail: str                     # what ran, or why it was skipped
    kernels: int = 0                # kernels checked
    failures: list[KernelFailure] = field(default_factory=list)
    seconds: float = 0.0
    command: list[str] | None = None
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # products for the artifact
    per_kernel: list = field(default_factory=list)  # typed per-kernel results (numerics)

    def to_dict(self) -> dict:
        out = {"check": self.check, "status": self.status, "detail": self.detail,
               "kernels": self.kernels, "seconds": round(self.seconds, 2),
               "failures": [{"kernel": f.kernel, "message": f.message} for f in self.failures]}
        if self.command:
            out["command"] = " ".join(self.command)
        if self.files:
            out["files"] = sorted(self.files)
        if self.per_kernel:
            out["per_kernel"] = [k.to_dict() for k in self.per_kernel]
        return out

    def line(self) -> str:
        text = f"{self.check:<14} {self.status.upper():<7} {self.detail}"
        for failure in self.failures[:5]:
            text += f"\n    {failure.kernel}: {failure.message.splitlines()[0][:200]}"
        return text


@dataclass
class CheckReport:
    target: str
    results: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAILED]

    def files(self) -> dict[str, bytes]:
        return {name: data for r in self.results for name, data in r.files.items()}

    def to_dict(self) -> dict:
        return {"target": self.target, "passed": not self.failed,
                "checks": [r.to_dict() for r in self.results]}

    def format(self) -> str:
        return "\n".join(r.line() for r in self.results)

    def raise_for_failures(self) -> None:
        if not self.failed:
            return
        first = self.failed[0]
        kernels = sorted({f.kernel for r in self.failed for f in r.failures})
        raise ToolchainError(
            f"Device checks failed for target {self.target}: "
            + "; ".join(f"{r.check}: {len(r.failures)} kernel(s)" for r in self.failed)
            + f" ({', '.join(kernels[:6])}{' ...' if len(kernels) > 6 else ''}).",
            command=first.command,
            stderr="\n".join(f"[{r.check}] {f.kernel}: {f.message}" for r in self.failed
                             for f in r.failures[:5]),
            hint="No artifact was written. The kernels come from the tuning database or DLight; "
                 "re-tune or build with --untuned to isolate a bad tuned schedule.")


@dataclass(frozen=True)
class CheckInput:
    code: DeviceCode
    target: object                  # tvm.target.Target
    scheduled: object               # the compiled (scheduled) IRModule
    reference: object               # the prepared (unscheduled) IRModule
    options: "CheckOptions"


@dataclass(frozen=True)
class CheckOptions:
    numerics: bool = True           # run kernels on PoCL against the CPU build
    kernel_timeout_s: float = 20.0  # per kernel, for the numerical check
    seed: int = 0
    atol: float = 1e-4
    rtol: float = 1e-4
