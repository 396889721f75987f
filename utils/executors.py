"""Where a suite's runs execute: local subprocesses, Ray tasks, or Slurm jobs (submitit).

Every executor runs the same thing, `execute_command(command, env)`: one entry-script process for
one run, whose folder receives its outputs. They differ in where that process runs:

    local  K processes at a time on this machine: one GPU each where GPUs exist
           (CUDA_VISIBLE_DEVICES), else the CPU threads split between them (OMP_NUM_THREADS)
    ray    one Ray task per run, with its CPU/GPU share as the task's resources; `ray.init()` starts a
           local Ray when no --ray_address is given, or joins the cluster at that address. A task whose
           worker dies is retried once (max_retries=1); results come back to the driver. A cluster's
           nodes must see the repository and the output folder at the same paths (a shared filesystem).
    slurm  one job per run through submitit (sbatch scripts in <output>/slurm); waits for them.
"""
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTORS = ("local", "ray", "slurm")


def execute_command(command: list, env: dict) -> dict:
    """Run one entry-script process: {"status": "ok" | "pruned" | "failed", "error": last error line}."""
    from utils.search import PRUNED_EXIT
    from utils.suite import last_error_line

    finished = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if finished.returncode == 0:
        return {"status": "ok", "error": ""}
    if finished.returncode == PRUNED_EXIT:
        return {"status": "pruned", "error": finished.stderr.strip().splitlines()[-1]}
    return {"status": "failed", "error": last_error_line(finished.stderr + finished.stdout)}


def resource_shares(max_parallel: int) -> tuple[int, int]:
    """(GPUs on this machine, CPU threads per run) when max_parallel runs share it."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    return gpus, max(1, (os.cpu_count() or 1) // max_parallel)


def thread_environment(threads: int) -> dict:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_local(jobs: list, max_parallel: int, on_done: Callable) -> None:
    """jobs: [(key, command)]. on_done(key, outcome) in the driver as each finishes."""
    gpus, threads = resource_shares(max_parallel)
    free_gpus = list(range(gpus))

    def launch(key: str, command: list) -> tuple[str, dict]:
        device = free_gpus.pop() if free_gpus else None
        env = thread_environment(threads) if device is None else {"CUDA_VISIBLE_DEVICES": str(device)}
        try:
            return key, execute_command(command, env)
        finally:
            if device is not None:
                free_gpus.append(device)

    with ThreadPoolExecutor(max_workers=max_parallel) as pool:
        futures = [pool.submit(launch, key, command) for key, command in jobs]
        for future in as_completed(futures):
            on_done(*future.result())


def check_ray_address(address: str) -> None:
    """One line naming an unreachable address before any run starts (Ray itself would retry for a minute)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray_address {address!r}: expected host:port of a running Ray head")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise ValueError(f"--ray_address {address}: unreachable ({error.strerror or error}); start the head with `ray start --head` or leave the flag out for a local Ray") from None


def run_ray(jobs: list, max_parallel: int, on_done: Callable, address: Optional[str] = None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent from the driver
    import ray

    if address:
        check_ray_address(address)
        ray.init(address=address, log_to_driver=False)
    else:
        # A local Ray on the loopback address only: nothing listens on or talks to other interfaces.
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
    try:
        gpus, threads = resource_shares(max_parallel)
        gpu_share = 1 if gpus else 0
        task = ray.remote(num_cpus=threads, num_gpus=gpu_share, max_retries=1)(execute_command)
        # Ray hands each task its GPU through CUDA_VISIBLE_DEVICES; the CPU threads are set here.
        pending = {task.remote(command, thread_environment(threads)): key for key, command in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as error:  # the task failed twice (its worker died, say)
                outcome = {"status": "failed", "error": str(error).strip().splitlines()[0][:500]}
            on_done(key, outcome)
    finally:
        ray.shutdown()


def submit_slurm(jobs: list, folder: str, parameters: dict) -> list:
    """Submit one sbatch job per run (submitit writes the scripts into `folder`); returns [(key, job)]."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, python=sys.executable)
    executor.update_parameters(**parameters)
    return [(key, executor.submit(execute_command, command, {})) for key, command in jobs]


def run_slurm(jobs: list, on_done: Callable, folder: str, parameters: dict) -> None:
    for key, job in submit_slurm(jobs, folder, parameters):
        try:
            outcome = job.result()
        except Exception as error:  # submitit re-raises the job's failure here
            outcome = {"status": "failed", "error": str(error).strip().splitlines()[-1][:500]}
        on_done(key, outcome)
