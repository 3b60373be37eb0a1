"""Default schedules for CPU kernels nobody tuned: MetaSchedule's design-space sketches with
decisions derived from the loop extents and the target's vector unit (``policy``), replayed and
postprocessed (``sketch``). GPU targets use DLight's rules instead (``lowering.backends``)."""

from .policy import CpuParams, cpu_params
from .sketch import SketchError, Sketched, default_schedule, packable, postprocs, search_space

__all__ = ["CpuParams", "SketchError", "Sketched", "cpu_params", "default_schedule", "packable",
           "postprocs", "search_space"]
