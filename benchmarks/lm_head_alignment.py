"""Does an LM head whose vocabulary is not a multiple of 8 cost extra on the GPU? Times hidden @ Wᵀ for GPT-2's
vocabulary (50257) against the same product padded to a multiple of 64 (50304), and the float32 log-softmax
the loss runs over the logits, in bf16 and fp32 (no TF32), for 16 x 128 tokens of width 768 (workload (b)).

`benchmarks/profile_points.py` showed cuBLAS taking an sm75 CUTLASS kernel for the unaligned head (~95 TFLOP/s,
1.5-1.7 ms per point on an H100); this measures what padding would give before the loss path is changed.

    python benchmarks/lm_head_alignment.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def timed(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    tokens, width, vocab, padded = 16 * 128, 768, 50257, 50304
    print(f"GPU: {torch.cuda.get_device_name()}; {tokens} tokens x width {width}")
    print("| dtype | vocab | head ms | TFLOP/s | log-softmax (fp32) ms |\n|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        hidden = torch.randn(tokens, width, device="cuda", dtype=dtype)
        for v in (vocab, padded):
            weight = torch.randn(v, width, device="cuda", dtype=dtype)
            ms = timed(lambda h=hidden, w=weight: F.linear(h, w))
            logits = F.linear(hidden, weight)
            ls = timed(lambda x=logits: torch.log_softmax(x.float(), dim=-1))
            print(f"| {str(dtype)[6:]} | {v} | {ms:.3f} | {2 * tokens * width * v / ms / 1e9:.0f} | {ls:.3f} |")


if __name__ == "__main__":
    main()
