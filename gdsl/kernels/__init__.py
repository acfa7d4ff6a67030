"""Kernel runtime: compiled-kernel cache, launch, schedules and the autotuner.

See docs/design.md, section 4. Imports flow API -> compiler -> kernels, never back.
"""
