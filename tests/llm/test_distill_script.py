"""scripts/distill_llm.py, the notebook-05 pipeline (course_utils.llm.pipeline) as a command-line script: in process
(top-k KD, checkpoint resume, adapter + merged model) and under ``accelerate launch`` with two CPU processes (gloo), on
a tiny Llama."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils.llm import tiny

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "distill_llm.py"
CPU_CONFIG = ROOT / "configs" / "accelerate_cpu_2proc.yaml"


def _load_script():
    spec = importlib.util.spec_from_file_location("distill_llm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny_llama_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path / "cache"))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    tok = tiny.toy_llama_tokenizer()
    return tiny.save_model(tiny.tiny_llama(tok, layers=4), tok, tmp_path / "llama")


def _common(path: str, out: Path) -> list[str]:
    return ["--profile", "small", "--teacher", path, "--student", path, "--drop-layers", "1-2", "--n-train", "12",
            "--n-heldout", "4", "--max-new-tokens", "4", "--batch-size", "2", "--save-steps", "2", "--no-filter",
            "--output-dir", str(out)]


def test_layer_ranges():
    script = _load_script()
    assert script._layers("6-8,12") == (6, 7, 8, 12) and script._layers("") == ()


def test_script_in_process_topk_resume_and_merge(tiny_llama_dir, tmp_path):
    script = _load_script()
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        first = script.main(_common(tiny_llama_dir, out) + ["--method", "topk_kd", "--max-steps", "2"])
        assert first["steps"] == 2 and not first["resumed"] and (out / "checkpoint-2").is_dir()
        again = script.main(_common(tiny_llama_dir, out) + ["--method", "topk_kd", "--max-steps", "4", "--resume"])
    finally:
        torch.set_num_threads(threads)
    assert again["steps"] == 4 and again["resumed"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text()) == again
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.config.num_hidden_layers == 2 and not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate's launcher is not installed next to this Python")
def test_accelerate_launch_two_cpu_processes(tiny_llama_dir, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(CPU_CONFIG), str(SCRIPT),
           *_common(tiny_llama_dir, out), "--method", "token_kd", "--max-steps", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4 and summary["method"] == "token_kd"
    assert math.isfinite(summary["heldout_perplexity"])
    assert (out / "checkpoint-4").is_dir() and (out / "adapter" / "adapter_config.json").is_file()
    # exactly one process printed the summary line
    assert sum(line.startswith('{"method"') for line in done.stdout.splitlines()) == 1
