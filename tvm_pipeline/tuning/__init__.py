"""Tuning: MetaSchedule tuning (scheduler, builders, measurement, intrinsics), the per-target
databases, distillation, borrowing schedules between similar kernels, and the kernel check that
every schedule passes before it is used."""
