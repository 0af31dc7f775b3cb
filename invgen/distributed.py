"""The process group a command runs in, as `accelerate launch` set it up.

On a machine without GPUs, `accelerate launch --cpu --num_processes 2` starts one process (accelerate
needs mpirun for more); N CPU processes over gloo come from

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...

`Accelerator()` reads that flag, but a bare `PartialState()` does not and would treat each process as
alone: commands that need no `Accelerator` (sampling) take their state from `process_state` instead.
"""

from __future__ import annotations


def process_state():
    """accelerate's `PartialState`, on the CPU (gloo) when the launcher asked for it."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
