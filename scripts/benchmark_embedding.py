"""Time the patch embeddings side by side on one batch (default 32 x 7 x 512, the wavelet review's size).

    python scripts/benchmark_embedding.py [--batch 32 --variables 7 --seq_len 512 --repeats 20 --device cpu]

Prints, per embedding, the median time of a forward pass and of a forward + backward pass, and the
ratio to the standard patch embedding; the variants are measured interleaved (round-robin), so
machine load affects them alike.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from layers.Embed import PatchEmbedding  # noqa: E402
from layers.WaveletEmbed import WaveletPatchEmbedding  # noqa: E402


def wavelet_config(options, **overrides) -> argparse.Namespace:
    values = dict(wavelet=options.wavelet, swt_level=options.swt_level, wavelet_mode="replicate", wavelet_projection="flatten",
                  use_all_coeffs=1, learnable_wavelet=0, wavelet_semantic=0, lambda_wavelet=1.0, patch_len=16, stride=8,
                  seq_len=options.seq_len, d_model=options.d_model, dropout=0.0)
    values.update(overrides)
    return argparse.Namespace(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--variables", type=int, default=7)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--d_model", type=int, default=32)
    parser.add_argument("--wavelet", default="db4")
    parser.add_argument("--swt_level", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    device = torch.device(options.device)
    embeddings = {
        "patch (standard)": PatchEmbedding(options.d_model, 16, 8, 0.0),
        "wavelet flatten": WaveletPatchEmbedding(wavelet_config(options)),
        "wavelet band": WaveletPatchEmbedding(wavelet_config(options, wavelet_projection="band")),
        "wavelet band + learnable filters": WaveletPatchEmbedding(wavelet_config(options, wavelet_projection="band", learnable_wavelet=1)),
    }
    x = torch.randn(options.batch, options.variables, options.seq_len, device=device)
    times = {name: {"forward": [], "forward+backward": []} for name in embeddings}

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for module in embeddings.values():
        module.to(device)(x)  # warm-up
    for _ in range(options.repeats):
        for name, module in embeddings.items():
            synchronise()
            start = time.perf_counter()
            with torch.no_grad():
                module(x)
            synchronise()
            times[name]["forward"].append(time.perf_counter() - start)
            start = time.perf_counter()
            module(x)[0].sum().backward()
            synchronise()
            times[name]["forward+backward"].append(time.perf_counter() - start)
    print(f"{options.batch} x {options.variables} x {options.seq_len} on {device}, {options.wavelet} level {options.swt_level}, "
          f"median of {options.repeats}")
    base = {kind: statistics.median(values) for kind, values in times["patch (standard)"].items()}
    for name, kinds in times.items():
        cells = [f"{kind} {1000 * statistics.median(values):7.2f} ms ({statistics.median(values) / base[kind]:4.1f}x)" for kind, values in kinds.items()]
        print(f"  {name:34s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
