"""Where the adapter's forward overhead goes: TinyLoraLinear.forward with parts left out, each against the base.

The forward stage of bench.run gives one number, adapted / base. This splits it. Every TinyLoraLinear runs one
of these forwards (the same no-grad pass over G sequences as bench.run's forward stage), the parts through a module
put in the layer's place (bench_model.AdapterPart):

    full        TinyLoraLinear's own forward
    wrapper     the base layer's call and nothing else: what PEFT's module around it costs
    thin_gemm   the wrapper plus the cached-factor check and h = A xᵀ, the update left out
    update      the wrapper plus the update h (B·R)ᵀ added into the output, with h kept from the first call

Each round times the base model once and then every part in a shuffled order; each part's number is the median
of its per-round ratios to that round's base, with the interquartile range (bench_model.Paired). Measured with
their operands hot in a micro-benchmark the adapter's ops are about half of what `full` shows here: in the model
the base GEMM before them evicts the activations they read.

    python -m bench.forward_parts --quant nf4 --rounds 80     # CPU preset, about 20 s
"""
from __future__ import annotations

import argparse
import json
import random
from typing import Callable

from bench import bench_model

PARTS = ("full", "wrapper", "thin_gemm", "update")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import errors

    parser = errors.ArgumentParser(prog="python -m bench.forward_parts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_model.add_probe_arguments(parser)
    parser.add_argument("--quant", choices=("nf4", "bf16"), default="nf4",
                        help="the base: NF4 (default) or dense (bf16 on a GPU, fp32 on a CPU), as bench.run")
    parser.add_argument("--rounds", type=int, default=40,
                        help="timed rounds, each the base and every part (default 40)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        errors.cli_error("--rounds must be a positive integer")
    bench_model.check_probe_arguments(args)
    return args


def part_forwards() -> dict[str, Callable]:
    """The forward of each part but "full" (the layer's own), for a TinyLoraLinear `self` (no grad, the bench's
    adapter "default" only)."""
    import torch

    def wrapper(self, x, *args, **kwargs):
        return self.base_layer(x, *args, **kwargs)

    def thin_gemm(self, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)  # (batch, seq, out)
        f = self.factors("default", x.dtype, result.dtype, x.device)
        torch.mm(f.A, x.reshape(-1, x.shape[-1]).T)  # (r, tokens), dropped
        return result

    def update(self, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)  # (batch, seq, out)
        f = self.factors("default", x.dtype, result.dtype, x.device)
        h_t = self.__dict__.get("_parts_h_t")
        if h_t is None:  # the first call's h: later calls add the update without computing it
            h_t = self.__dict__["_parts_h_t"] = torch.mm(f.A, x.reshape(-1, x.shape[-1]).T)  # (r, tokens)
        result.view(-1, result.shape[-1]).addmm_(h_t.T, f.BR_t)  # (tokens, out), in place
        return result

    return {"wrapper": wrapper, "thin_gemm": thin_gemm, "update": update}


def part_modules(model) -> dict[str, dict]:
    """Each part's modules for `bench_model.swapped`, built once; none for "full", the model as it is."""
    swaps = {name: bench_model.adapter_parts(model, forward) for name, forward in part_forwards().items()}
    return {"full": {}, **swaps}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    probe = bench_model.probe(bench_model.PRESETS[args.preset], args.quant == "nf4", args.threads)
    model, ids = probe.model, probe.ids  # ids: (G, prompt + completion)
    parts = part_modules(model)
    base_times: list[float] = []
    part_times: dict[str, list[float]] = {name: [] for name in PARTS}
    order = random.Random(0)
    with torch.no_grad():
        for name in PARTS:  # warm-up: every part's kernels and caches once, and the first call's h for `update`
            with bench_model.swapped(model, parts[name]):
                model(input_ids=ids)
        for _ in tqdm(range(args.rounds), desc="forward parts", unit="round"):
            with bench_model.without_adapter(model) as base:
                base_times.append(probe.timed(base))
            for name in order.sample(PARTS, len(PARTS)):
                with bench_model.swapped(model, parts[name]):
                    part_times[name].append(probe.timed(model))
    base_kind = "nf4" if args.quant == "nf4" else str(model.dtype).removeprefix("torch.")
    parts = {name: bench_model.Paired(tuple(base_times), tuple(times)).summary() for name, times in part_times.items()}
    out = {"preset": args.preset, "base": base_kind, "device": probe.device, "clock": probe.clock.__name__,
           "parts": parts}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
