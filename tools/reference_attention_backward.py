# SPDX-License-Identifier: Apache-2.0
# recpipe: PyTorch autograd references for the attention and transformer-layer backward passes.
"""Writes PyTorch autograd fixtures for cpu/attention_backward.hpp.

Run with Debian's python (it has python3-torch):

    /usr/bin/python3 tools/reference_attention_backward.py --out build/attention_backward_ref

For each case NAME it writes NAME.safetensors holding
  the module's parameters, named as its state_dict() (nn.MultiheadAttention or
  nn.TransformerEncoderLayer(dropout=0, batch_first=True)),
  x [B * T, E] (session b's item t at row b * T + t, right-padded), lengths [B] (I64),
  dy [B * T, E] (0 on padded rows: recpipe's padded outputs are constants),
  y [B * T, E] the forward output, dx [B * T, E] and grad.<parameter> the autograd gradients,
and metadata: kind (mha | layer), num_heads, causal, norm_first, activation, max_len.
The forward uses key_padding_mask for the padding and a causal attn_mask where `causal` is 1.

Exit code 77 means "torch is not installed": ctest reports the parity test as skipped.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
COMPLETE_MARKER = "COMPLETE"  # written last; the C++ parity test skips when it is absent


def _clear_marker(argv):
    # A stale fixture from an earlier run must never let the parity test pass without torch.
    if "--out" in argv and argv.index("--out") + 1 < len(argv):
        marker = os.path.join(argv[argv.index("--out") + 1], COMPLETE_MARKER)
        if os.path.exists(marker):
            os.remove(marker)


_clear_marker(sys.argv)

try:
    import torch
    import torch.nn as nn
except ImportError:  # pragma: no cover - depends on the machine
    print("reference_attention_backward.py: torch is not installed (apt-get install python3-torch)", file=sys.stderr)
    sys.exit(77)

from reference_models import save_safetensors  # noqa: E402  (the hand-written writer; needs torch)

# name: (kind, E, heads, F, lengths, causal, norm_first, activation)
CASES = {
    "mha_causal": ("mha", 16, 4, 0, [6, 3, 1, 5], True, False, "relu"),
    "mha_full": ("mha", 12, 3, 0, [5, 2, 4], False, False, "relu"),
    "layer_post_relu": ("layer", 16, 2, 32, [6, 3, 1, 5], True, False, "relu"),
    "layer_post_gelu": ("layer", 16, 4, 24, [4, 6, 2], True, False, "gelu"),
    "layer_pre_relu": ("layer", 16, 4, 24, [6, 1, 3], True, True, "relu"),
    "layer_pre_gelu": ("layer", 12, 3, 20, [5, 4, 5, 2], False, True, "gelu"),
}


def run_case(name, spec, out, gen):
    kind, e, heads, ff, lengths, causal, norm_first, activation = spec
    batch, t = len(lengths), max(lengths)
    if kind == "mha":
        module = nn.MultiheadAttention(e, heads, batch_first=True)
    else:
        module = nn.TransformerEncoderLayer(e, heads, ff, dropout=0.0, activation=activation, batch_first=True,
                                            norm_first=norm_first)
    module.train()  # dropout is 0; train mode keeps torch off its inference fast path
    with torch.no_grad():
        for pname, p in module.named_parameters():
            if pname.endswith("norm1.weight") or pname.endswith("norm2.weight"):
                p.copy_(1.0 + 0.5 * (torch.rand(p.shape, generator=gen) - 0.5))
            elif pname.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
            else:
                p.copy_((torch.rand(p.shape, generator=gen) - 0.5) * (2.0 / p.shape[-1] ** 0.5))
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    padding = torch.arange(t).unsqueeze(0) >= lengths_t.unsqueeze(1)  # True = masked key
    attn_mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) if causal else None
    x = torch.randn(batch, t, e, generator=gen).requires_grad_(True)
    dy = torch.randn(batch, t, e, generator=gen) * (~padding).unsqueeze(-1).float()
    if kind == "mha":
        y, _ = module(x, x, x, key_padding_mask=padding, attn_mask=attn_mask, need_weights=False)
    else:
        y = module(x, src_mask=attn_mask, src_key_padding_mask=padding)
    y = y * (~padding).unsqueeze(-1).float()  # recpipe writes padded output rows as 0
    y.backward(dy)
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    flat = lambda v: v.detach().reshape(batch * t, e).clone()  # noqa: E731
    tensors.update({"x": flat(x), "dy": flat(dy), "y": flat(y), "dx": flat(x.grad), "lengths": lengths_t})
    for pname, p in module.named_parameters():
        tensors["grad." + pname] = p.grad.detach().clone()
    metadata = {"kind": kind, "num_heads": heads, "causal": int(causal), "norm_first": int(norm_first),
                "activation": activation, "max_len": t}
    save_safetensors(tensors, os.path.join(out, name + ".safetensors"), metadata)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(7)
    for name, spec in CASES.items():
        run_case(name, spec, args.out, gen)
    with open(os.path.join(args.out, COMPLETE_MARKER), "w") as marker:
        marker.write(torch.__version__ + "\n")
    print(f"reference_attention_backward.py: wrote {', '.join(CASES)} to {args.out}")


if __name__ == "__main__":
    main()
