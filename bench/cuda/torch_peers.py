#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch peers for bench_cuda: times the PyTorch (2.x, eager) version of every case bench_cuda
wrote to its --tsv file and prints the merged table

    | case | ours (ms) | peer (ms) | ratio | fraction of ceiling |

ratio = peer / ours (above 1: recpipe is faster); the fraction of ceiling is bench_cuda's: GB/s
over the copy bandwidth it measured in the same run, or TFLOP/s for GEMM-bound cases. Cases are
rebuilt from the shapes in their names (bench_cuda names them). Peers: F.embedding_bag (fp32,
fp16; int8 row-wise has none in core PyTorch), torch.topk, eager DCN-v2 cross layers, eager MLP,
bmm + tril gather for the DLRM interaction, the FM formula, in-projection + scaled_dot_product_attention
(every backend forced in turn via torch.nn.attention.sdpa_kernel: FLASH_ATTENTION, EFFICIENT_ATTENTION,
CUDNN_ATTENTION, MATH; one that refuses the shape is listed as n/a, the fastest is the peer) +
out-projection, an eager nn.TransformerEncoder stack (norm_first, causal) with the embedding gather and
final LayerNorm for the session transformer's encode, Tensor.copy_ for the copy ceiling.
(every backend forced in turn, the fastest kept) + out-projection, Tensor.copy_ for the copy ceiling.
Rows without a PyTorch peer (int8 bags, the whole pipeline at batch 64, whose peer is the CPU
backend) keep bench_cuda's own peer; the cross layers' fraction of ceiling also gives bench_cuda's
"cuBLAS GEMMs alone" time over ours (the fraction of the cuBLAS GEMM rate).
Each peer is timed with CUDA events: 3 warm-ups, 30 repetitions, median. Exits 77 without torch
or without a GPU.

usage: torch_peers.py BENCH_TSV [--out TABLE.md]
"""
import re
import sys

REPETITIONS = 30


def read_tsv(path):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            values = line.rstrip("\n").split("\t")
            if len(values) == len(header):
                rows.append(dict(zip(header, values)))
    return rows


def median_ms(torch, fn):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    times = []
    for _ in range(REPETITIONS):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def numbers(name, *keys):
    out = []
    for key in keys:
        m = re.search(r"\b" + key + r" (\d+)", name)
        out.append(int(m.group(1)) if m else None)
    return out


def peer_for(torch, name):
    """A zero-argument callable running the PyTorch peer of case `name`, and the peer's label."""
    F = torch.nn.functional
    dev = "cuda"
    g = torch.Generator(device=dev)
    g.manual_seed(0)

    def rand(*shape, dtype=torch.float32):
        return torch.rand(*shape, device=dev, generator=g, dtype=torch.float32).mul_(2).sub_(1).to(dtype)

    if name.startswith("copy ceiling"):
        a = torch.ones(1 << 30, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        return (lambda: b.copy_(a)), "torch copy_"
    if name.startswith("embedding_bag "):
        rows, dim, bag, batch = numbers(name, "rows", "dim", "bag", "batch")
        weight = rand(rows, dim)
        ids = torch.randint(0, rows, (batch * bag,), device=dev, generator=g)
        offsets = torch.arange(0, batch * bag, bag, device=dev)
        return (lambda: F.embedding_bag(ids, weight, offsets, mode="sum")), "F.embedding_bag"
    if name.startswith("embedding_bags "):
        fmt = name.split()[1]
        tables, rows, dim, bag, batch = numbers(name, "tables", "rows", "dim", "bag", "batch")
        if fmt == "int8":
            return None, "none (no int8 row-wise embedding_bag in core PyTorch)"
        dtype = torch.float16 if fmt == "fp16" else torch.float32
        weights = [rand(rows, dim, dtype=dtype) for _ in range(tables)]
        ids = [torch.randint(0, rows, (batch * bag,), device=dev, generator=g) for _ in range(tables)]
        offsets = torch.arange(0, batch * bag, bag, device=dev)

        def run():
            return torch.cat([F.embedding_bag(i, w, offsets, mode="sum") for i, w in zip(ids, weights)], dim=1)

        return run, f"{tables} x F.embedding_bag ({fmt}) + cat"
    if name.startswith("top_k"):
        rows, cols, k = numbers(name, "rows", "N", "k")
        x = rand(rows, cols)
        return (lambda: torch.topk(x, k, dim=1)), "torch.topk"
    if name.startswith("dot_scores"):
        m = re.search(r"requests (\d+) x (\d+) dim (\d+)", name)
        requests, per, dim = (int(v) for v in m.groups())
        items = rand(1000000, dim)
        queries = rand(requests, dim)
        cand = torch.randint(0, 1000000, (requests, per), device=dev, generator=g)
        return (lambda: torch.bmm(items[cand], queries.unsqueeze(2)).squeeze(2)), "gather + bmm"
    if name.startswith("cross_network"):
        batch, d, layers, rank = numbers(name, "batch", "d", "layers", "rank")
        x0 = rand(batch, d)
        if rank is None:
            ws = [rand(d, d) / d ** 0.5 for _ in range(layers)]
            bs = [rand(d) for _ in range(layers)]

            def run():
                x = x0
                for w, b in zip(ws, bs):
                    x = x0 * F.linear(x, w, b) + x
                return x
        else:
            vs = [rand(rank, d) / d ** 0.5 for _ in range(layers)]
            us = [rand(d, rank) / rank ** 0.5 for _ in range(layers)]
            bs = [rand(d) for _ in range(layers)]

            def run():
                x = x0
                for v, u, b in zip(vs, us, bs):
                    x = x0 * F.linear(F.linear(x, v), u, b) + x
                return x
        return run, "eager cross layers"
    if name.startswith("mlp"):
        (batch,) = numbers(name, "batch")
        widths = [int(w) for w in name.split()[1].split("-")]
        layers = []
        for i in range(len(widths) - 1):
            layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
            layers.append(torch.nn.ReLU() if i + 2 < len(widths) else torch.nn.Sigmoid())
        net = torch.nn.Sequential(*layers).to(dev)
        x = rand(batch, widths[0])
        return (lambda: net(x)), "nn.Sequential (eager)"
    if name.startswith("dot_interaction"):
        batch, f, d = numbers(name, "batch", "F", "d")
        t = rand(batch, f, d)
        li, lj = torch.tril_indices(f, f, offset=-1, device=dev)

        def run():
            z = torch.bmm(t, t.transpose(1, 2))
            return z[:, li, lj]

        return run, "bmm + tril gather (PyTorch-DLRM)"
    if name.startswith("fm_second_order"):
        batch, f, d = numbers(name, "batch", "F", "d")
        t = rand(batch, f, d)
        return (lambda: 0.5 * (t.sum(1).square() - t.square().sum(1)).sum(1)), "eager FM formula"
    if name.startswith("pipeline") or name.startswith("score DCN-v2"):
        return None, "-"  # bench_cuda's peer: the same pipeline on the CPU backend
    if name.startswith("attention"):
        sessions, length, e, heads = numbers(name, "sessions", "L", "E", "heads")
        causal = name.endswith("causal")
        x = rand(sessions, length, e)
        in_w, in_b = rand(3 * e, e) * 0.2, rand(3 * e) * 0.1
        out_w, out_b = rand(e, e) * 0.2, rand(e) * 0.1
        hd = e // heads
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def run_with(backend):
            def run():
                qkv = F.linear(x, in_w, in_b).view(sessions, length, 3, heads, hd).permute(2, 0, 3, 1, 4)
                with sdpa_kernel([backend]):
                    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
                return F.linear(o.transpose(1, 2).reshape(sessions, length, e), out_w, out_b)
            return run

        # Every SDPA backend forced in turn; one that refuses the shape or dtype (flash needs
        # fp16/bf16, so in fp32 it says no) is reported as n/a; the fastest one is the peer.
        best, results = None, []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            try:
                fn = run_with(backend)
                ms = median_ms(torch, fn)
            except Exception:
                results.append(f"{backend.name} n/a")
                continue
            results.append(f"{backend.name} {ms:.4f}")
            if best is None or ms < best[1]:
                best = (fn, ms, backend.name)
        if best is None:
            return None, "no SDPA backend ran (" + ", ".join(results) + ")"
        return best[0], f"in_proj + SDPA[{best[2]}] + out_proj (best of: " + ", ".join(results) + ")"
    if name.startswith("encode_host_ids"):
        return None, "-"
    if name.startswith("encode "):
        sessions, length, e, heads, ffn, layers = numbers(name, "sessions", "L", "E", "heads", "ffn", "layers")
        num_items = 50000
        items, pos = rand(num_items, e), rand(length, e)
        layer = torch.nn.TransformerEncoderLayer(e, heads, ffn, dropout=0.0, activation="relu", batch_first=True,
                                                 norm_first=True)
        encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).to(dev).eval()
        final = torch.nn.LayerNorm(e).to(dev).eval()
        ids = torch.randint(0, num_items, (sessions, length), device=dev, generator=g)
        mask = torch.nn.Transformer.generate_square_subsequent_mask(length, device=dev)

        def run():
            h = encoder(items[ids] + pos, mask=mask, is_causal=True)
            return final(h[:, -1])

        return run, "eager nn.TransformerEncoder (norm_first, causal) + gather + final LayerNorm"
    return None, "-"


def fraction(row):
    ours = float(row["ours_ms"])
    amount = float(row["bytes_or_minus_flops"])
    ceiling = float(row["ceiling_gb_per_s"])
    if amount == 0:  # no roofline (the whole pipeline): the ratio is the comparison
        return "-"
    if amount < 0:
        text = f"{-amount / (ours * 1e-3) / 1e12:.1f} TFLOP/s"
        cpp_peer_ms = float(row.get("peer_ms") or 0)
        if "ceiling" in row.get("peer", "") and cpp_peer_ms > 0:  # bench_cuda timed the GEMMs alone
            text += f" = {cpp_peer_ms / ours:.2f} of the cuBLAS GEMM rate"
        return text
    gbps = amount / (ours * 1e-3) / 1e9
    return f"{gbps:.1f} GB/s = {gbps / ceiling:.3f} of {ceiling:.0f} GB/s copy"


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    try:
        import torch
    except ImportError:
        print("SKIPPED: torch is not installed")
        return 77
    if not torch.cuda.is_available():
        print("SKIPPED: torch sees no CUDA device")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 GEMMs, as recpipe's cuBLAS calls
    torch.backends.cudnn.allow_tf32 = False
    rows = read_tsv(argv[1])
    lines = [f"torch {torch.__version__}, {torch.cuda.get_device_name()}", "",
             "| case | ours (ms) | peer (ms) | ratio | fraction of ceiling |", "|---|---|---|---|---|"]
    with torch.no_grad():
        for row in rows:
            name = row["case"]
            try:
                fn, label = peer_for(torch, name)
                peer = median_ms(torch, fn) if fn is not None else None
            except Exception as e:  # a peer that fails must not hide the other rows
                fn, label, peer = None, f"peer failed: {type(e).__name__}: {e}", None
            ours = float(row["ours_ms"])
            cpp_peer_ms = float(row.get("peer_ms") or 0)
            if peer is None and cpp_peer_ms > 0 and row.get("peer", "-") != "-":
                # No PyTorch peer (int8 bags, the whole pipeline): keep bench_cuda's own peer.
                label, peer = row["peer"], cpp_peer_ms
            ratio = f"{peer / ours:.2f}" if peer else "-"
            peer_text = f"{label} {peer:.4f}" if peer else label
            lines.append(f"| {name} | {ours:.4f} | {peer_text} | {ratio} | {fraction(row)} |")
            torch.cuda.empty_cache()
    text = "\n".join(lines)
    print(text)
    if "--out" in argv:
        with open(argv[argv.index("--out") + 1], "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
