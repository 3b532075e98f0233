# SPDX-License-Identifier: Apache-2.0
# recpipe: PyTorch nn.GRU outputs and autograd gradients for cpu/gru.hpp.
"""Writes PyTorch nn.GRU fixtures for cpu/gru.hpp (tests/unit/cpu/gru_parity.cpp).

Run with Debian's python (it has python3-torch):

    /usr/bin/python3 tools/reference_gru.py --out build/gru_ref

For each case NAME it writes NAME.safetensors holding
  weight_ih_l0 [3H, I], weight_hh_l0 [3H, H], bias_ih_l0 / bias_hh_l0 [3H] (absent with bias=False),
  x [B * T, I] (sequence b's step t at row b * T + t, right-padded with random values that must
  not matter), lengths [B] (I64), h0 [B, H],
  out [B * T, H] (nn.GRU over pack_padded_sequence, padded rows 0), h_n [B, H],
  dy [B * T, H] and dh_n [B, H] (the upstream gradients, dy 0 on padded rows),
  grad.x, grad.h0, grad.<weight> from autograd of sum(out * dy) + sum(h_n * dh_n),
and metadata: bias (0 | 1), max_len.

Exit code 77 means "torch is not installed": ctest reports the parity test as skipped.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common  # noqa: E402

fixture_common.start("reference_gru.py")  # clears a stale COMPLETE marker; exit 77 without torch

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402
from fixture_common import save_safetensors  # noqa: E402

# name: (I, H, lengths, bias)
CASES = {
    "step": (6, 5, [1, 1, 1], True),                # one step: what GRU4Rec's session-parallel training runs
    "equal": (8, 16, [5, 5, 5, 5], True),
    "ragged": (7, 12, [6, 2, 1, 4, 6], True),
    "no_bias": (4, 8, [3, 1, 2], False),
    "wide": (64, 100, [10, 3, 7, 1, 10, 5, 2, 8], True),  # GRU4Rec-sized hidden layer
}


def run_case(name, spec, out, gen):
    i, h, lengths, bias = spec
    batch, t = len(lengths), max(lengths)
    module = nn.GRU(i, h, num_layers=1, bias=bias, batch_first=True)
    with torch.no_grad():  # nn.GRU's own U(-1/sqrt(H), 1/sqrt(H)), drawn from our generator
        for p in module.parameters():
            p.uniform_(-1.0 / h ** 0.5, 1.0 / h ** 0.5, generator=gen)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    padding = torch.arange(t).unsqueeze(0) >= lengths_t.unsqueeze(1)  # True = padded step
    x = torch.randn(batch, t, i, generator=gen).requires_grad_(True)
    h0 = (torch.randn(1, batch, h, generator=gen) * 0.5).requires_grad_(True)
    packed = pack_padded_sequence(x, lengths_t, batch_first=True, enforce_sorted=False)
    y_packed, h_n = module(packed, h0)
    y, _ = pad_packed_sequence(y_packed, batch_first=True, total_length=t)
    dy = torch.randn(batch, t, h, generator=gen) * (~padding).unsqueeze(-1).float()
    dh_n = torch.randn(1, batch, h, generator=gen)
    ((y * dy).sum() + (h_n * dh_n).sum()).backward()
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    tensors.update({
        "x": x.detach().reshape(batch * t, i), "lengths": lengths_t, "h0": h0.detach().reshape(batch, h),
        "out": y.detach().reshape(batch * t, h), "h_n": h_n.detach().reshape(batch, h),
        "dy": dy.reshape(batch * t, h), "dh_n": dh_n.reshape(batch, h),
        "grad.x": x.grad.reshape(batch * t, i), "grad.h0": h0.grad.reshape(batch, h),
    })
    for pname, p in module.named_parameters():
        tensors["grad." + pname] = p.grad.detach().clone()
    save_safetensors(tensors, os.path.join(out, name + ".safetensors"), {"bias": int(bias), "max_len": t})


def main():
    args = fixture_common.argument_parser(__doc__).parse_args()
    fixture_common.begin_output(args.out)
    gen = torch.Generator().manual_seed(19)
    for name, spec in CASES.items():
        run_case(name, spec, args.out, gen)
    fixture_common.write_marker(args.out)
    print(f"reference_gru.py: wrote {', '.join(CASES)} to {args.out}")


if __name__ == "__main__":
    main()
