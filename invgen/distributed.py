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


def cpu_launch_command(args: list[str], num_processes: int = 2) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run `args` (a script or `-m module` and its arguments) in
    `num_processes` CPU processes of one torch thread each, joined over gloo (the launch above)."""
    import os
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    return cmd, env
