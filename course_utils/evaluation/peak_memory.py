"""Peak memory measured, on GPU and CPU: :func:`measure_peak_memory` runs a function and reports the peak
*above what was allocated before it* (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the allocations recorded by
``torch.profiler``, immune to glibc's caching). :func:`kd_loss_peak_memory` / :func:`compare_kd_loss_memory` apply it
to the naive and the chunked KD losses (optionally in a subprocess that reads peak RSS).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..kd.llm_losses import chunked_kd_loss

__all__ = ['GiB', 'MiB', 'PeakMemory', 'measure_peak_memory', 'KD_LOSS_METHODS', 'KD_LOSS_LABELS', 'kd_loss_peak_memory', 'compare_kd_loss_memory']


GiB = 2**30
MiB = 2**20


# ------------------------------------------------------------------------------------------- measuring
@dataclass
class PeakMemory:
    """Result of :func:`measure_peak_memory`: the function's return value and its peak memory (bytes)."""

    result: Any
    device: str
    peak_above_baseline: int
    """peak memory allocated during the call minus what was allocated when it started."""
    baseline: int | None
    """memory allocated before the call (CUDA); None on CPU, where only the call's own allocations are seen."""
    seconds: float

    @property
    def mib(self) -> float:
        return self.peak_above_baseline / MiB

    @property
    def gib(self) -> float:
        return self.peak_above_baseline / GiB


def measure_peak_memory(fn: Callable[..., Any], *args: Any, device: Any = None, **kwargs: Any) -> PeakMemory:
    """Run ``fn(*args, **kwargs)`` and measure its peak memory above what was allocated when it started.

    * CUDA (``device`` is a CUDA device, or None while CUDA is available): ``torch.cuda.reset_peak_memory_stats``
      then ``max_memory_allocated − memory_allocated(before)`` — the caching allocator's view, what
      ``torch.cuda.OutOfMemoryError`` is about.
    * CPU: ``torch.profiler.profile(profile_memory=True)`` records every allocation and free of PyTorch's CPU
      allocator; the peak of their running sum is exact and unaffected by glibc keeping freed memory (which makes
      RSS-based numbers useless unless ``MALLOC_MMAP_THRESHOLD_=65536`` is set before Python starts). The profiler
      slows many tiny ops down; it is fine for a few large ones.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(dev)
        return PeakMemory(result, str(dev), peak - before, before, seconds)
    if dev.type != "cpu":
        raise ValueError(f"measure_peak_memory supports CUDA and CPU devices, got {dev}")
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    return PeakMemory(result, "cpu", _profiler_peak(prof), None, seconds)


def _profiler_peak(prof: Any) -> int:
    """Peak of the running sum of CPU allocations recorded by ``prof`` (bytes)."""
    events: list[tuple[int, int]] = []
    try:  # the allocation events themselves, with timestamps (private API, stable since torch 2.0)
        from torch._C._profiler import _EventType

        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            stack.extend(node.children)
    except Exception:  # pragma: no cover - fallback: public events (allocations attributed to ops)
        events = [(int(e.time_range.start * 1000), int(e.cpu_memory_usage)) for e in prof.events()
                  if e.name == "[memory]"]
    events.sort()
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


# ------------------------------------------------------------------------------ KD loss memory (CPU or GPU)
KD_LOSS_METHODS = ("naive", "checkpointed", "chunked", "chunked_inplace")
KD_LOSS_LABELS = {
    "naive": "naive F.kl_div(log_softmax(z/T), log_softmax(v/T))",
    "checkpointed": "chunks of positions + torch.utils.checkpoint",
    "chunked": "chunked_kd_loss (gradient in forward, separate buffer)",
    "chunked_inplace": "chunked_kd_loss(inplace_grad=True) (gradient into the logits)",
}


def _kd_loss_fn(method: str, temperature: float, chunk_size: int | None):
    import torch.nn.functional as F


    t = temperature

    def naive(z, v):
        vocab = z.shape[-1]
        return F.kl_div(F.log_softmax(z.reshape(-1, vocab) / t, -1), F.log_softmax(v.reshape(-1, vocab) / t, -1),
                        log_target=True, reduction="batchmean") * (t * t)

    def checkpointed(z, v):
        from torch.utils.checkpoint import checkpoint

        vocab = z.shape[-1]
        zf, vf = z.reshape(-1, vocab), v.reshape(-1, vocab)
        size = chunk_size or 64
        rows = zf.shape[0]

        def piece(a, b):
            return F.kl_div(F.log_softmax(a / t, -1), F.log_softmax(b / t, -1), log_target=True, reduction="sum")

        total = sum(checkpoint(piece, zf[s:s + size], vf[s:s + size], use_reentrant=False)
                    for s in range(0, rows, size))
        return total / rows * (t * t)

    if method == "naive":
        return naive
    if method == "checkpointed":
        return checkpointed
    if method in ("chunked", "chunked_inplace"):
        inplace = method == "chunked_inplace"
        return lambda z, v: chunked_kd_loss(z, v, t, chunk_size=chunk_size, inplace_grad=inplace)
    raise ValueError(f"method must be one of {KD_LOSS_METHODS}, got {method!r}")


def kd_loss_peak_memory(
    method: str,
    batch_size: int = 4,
    seq_len: int = 512,
    vocab_size: int = 51_200,
    temperature: float = 2.0,
    chunk_size: int | None = None,
    device: str = "cpu",
    subprocess_rss: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Peak memory above the inputs of one forward + backward of a KD loss on random fp32 ``(B, S, V)`` logits.

    The inputs (student logits with ``requires_grad``, teacher logits) are allocated first; the figure is what
    the loss *adds* at its peak, gradient of the logits included (a naive loss must allocate it; the in-place
    chunked loss reuses the logits' storage).

    Args:
        method: one of :data:`KD_LOSS_METHODS`.
        device: ``"cpu"`` (torch.profiler allocations) or ``"cuda"`` (max_memory_allocated).
        subprocess_rss: CPU only: run in a fresh Python process with ``MALLOC_MMAP_THRESHOLD_=65536`` and read its
            peak RSS (``resource.getrusage``) before and after — an independent check of the profiler figure.

    Returns:
        dict with ``method``, ``label``, ``mib`` (above the inputs), ``logits_mib`` (one logits tensor),
        ``ratio_to_logits``, ``seconds``, ``loss``, ``how``.
    """
    if method not in KD_LOSS_METHODS:
        raise ValueError(f"method must be one of {KD_LOSS_METHODS}, got {method!r}")
    if subprocess_rss:
        if device != "cpu":
            raise ValueError("subprocess_rss measures CPU RSS; use device='cpu'")
        return _rss_subprocess([method], batch_size, seq_len, vocab_size, temperature, chunk_size, seed)[0]
    import torch

    fn = _kd_loss_fn(method, temperature, chunk_size)
    # warm-up at a tiny size: one-time allocations (thread pools, kernels) must not count
    zw = torch.randn(2, 4, vocab_size, device=device, requires_grad=True)
    fn(zw, torch.randn(2, 4, vocab_size, device=device)).backward()
    del zw
    g = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn(batch_size, seq_len, vocab_size, generator=g, device=device).requires_grad_()
    v = torch.randn(batch_size, seq_len, vocab_size, generator=g, device=device)

    def step():
        loss = fn(z, v)
        loss.backward()
        return float(loss.detach())

    m = measure_peak_memory(step, device=device)
    logits_mib = z.numel() * z.element_size() / MiB
    return {"method": method, "label": KD_LOSS_LABELS[method], "mib": round(m.mib, 1), "logits_mib": logits_mib,
            "ratio_to_logits": round(m.mib / logits_mib, 3), "seconds": round(m.seconds, 2), "loss": m.result,
            "how": "torch.cuda.max_memory_allocated" if device != "cpu" else "torch.profiler allocations"}


def _proc_status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name} (not Linux?)")


def _rss_probe(method: str, batch_size: int, seq_len: int, vocab_size: int, temperature: float, chunk_size: int,
               seed: int) -> dict[str, Any]:
    """Subprocess body of ``kd_loss_peak_memory(subprocess_rss=True)``: peak RSS above the inputs.

    Reads ``VmHWM`` (the peak resident set of this process's memory) after resetting it to the current RSS by
    writing ``5`` to ``/proc/self/clear_refs`` once the inputs exist. ``resource.getrusage().ru_maxrss`` would be
    wrong here: Linux carries it across ``fork``/``exec``, so a child started by a large parent starts with the
    parent's peak. Needs ``MALLOC_MMAP_THRESHOLD_`` low (set by the caller) so freed chunk temporaries go back to
    the OS instead of glibc's heap.
    """
    import torch

    fn = _kd_loss_fn(method, temperature, chunk_size or None)
    zw = torch.randn(2, 4, vocab_size, requires_grad=True)
    fn(zw, torch.randn(2, 4, vocab_size)).backward()
    del zw
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch_size, seq_len, vocab_size, generator=g).requires_grad_()
    v = torch.randn(batch_size, seq_len, vocab_size, generator=g)
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
        f.write("5")
    base = _proc_status_kib("VmRSS")
    start = time.perf_counter()
    loss = fn(z, v)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = _proc_status_kib("VmHWM")
    logits_mib = z.numel() * 4 / MiB
    mib = max(0, peak - base) / 1024
    return {"method": method, "label": KD_LOSS_LABELS[method], "mib": round(mib, 1), "logits_mib": logits_mib,
            "ratio_to_logits": round(mib / logits_mib, 3), "seconds": round(seconds, 2),
            "loss": float(loss.detach()),
            "how": "peak RSS (VmHWM), MALLOC_MMAP_THRESHOLD_=" + os.environ.get("MALLOC_MMAP_THRESHOLD_", "unset")}


def _rss_subprocess(methods: list[str], batch_size: int, seq_len: int, vocab_size: int, temperature: float,
                    chunk_size: int | None, seed: int) -> list[dict[str, Any]]:
    """Run :func:`_rss_probe` for ``methods`` one after the other in one fresh Python process (torch imported once)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONHASHSEED="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    args = [sys.executable, "-m", "course_utils.evaluation.peak_memory", "kd-loss", ",".join(methods), str(batch_size), str(seq_len),
            str(vocab_size), str(temperature), str(chunk_size or 0), str(seed)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"KD memory subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_kd_loss_memory(
    methods: tuple[str, ...] = KD_LOSS_METHODS,
    batch_size: int = 4,
    seq_len: int = 512,
    vocab_size: int = 51_200,
    temperature: float = 2.0,
    chunk_size: int | None = None,
    device: str = "cpu",
    subprocess_rss: bool = False,
) -> list[dict[str, Any]]:
    """:func:`kd_loss_peak_memory` for several methods, each row with ``vs_naive`` (its ratio to the naive loss).

    With ``subprocess_rss`` all methods run, in turn, in one fresh process (its peak RSS is reset before each).
    """
    for m in methods:
        if m not in KD_LOSS_METHODS:
            raise ValueError(f"method must be one of {KD_LOSS_METHODS}, got {m!r}")
    if subprocess_rss:
        if device != "cpu":
            raise ValueError("subprocess_rss measures CPU RSS; use device='cpu'")
        rows = _rss_subprocess(list(methods), batch_size, seq_len, vocab_size, temperature, chunk_size, 0)
    else:
        rows = [kd_loss_peak_memory(m, batch_size, seq_len, vocab_size, temperature, chunk_size, device)
                for m in methods]
    naive = next((r["mib"] for r in rows if r["method"] == "naive"), None)
    for r in rows:
        r["vs_naive"] = round(r["mib"] / naive, 3) if naive else None
    return rows


def _main(argv: list[str]) -> int:
    """``python -m course_utils.evaluation.peak_memory kd-loss …``: the subprocess of :func:`kd_loss_peak_memory`."""
    if len(argv) >= 1 and argv[0] == "kd-loss":
        methods, b, s, v, t, c, seed = argv[1:8]
        rows = [_rss_probe(m, int(b), int(s), int(v), float(t), int(c), int(seed)) for m in methods.split(",")]
        print(json.dumps(rows))
        return 0
    print("usage: python -m course_utils.evaluation.peak_memory kd-loss METHOD[,METHOD…] B S V T CHUNK SEED",
          file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
