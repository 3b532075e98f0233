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

Whole-model cases (train::session_transformer_model): SESSION.safetensors holds the weights of
tools/reference_models.py's SessionTransformer (metadata recpipe.model / recpipe.config as the
serving loader reads them), ragged sessions (offsets, items: I64), the mean next-item
cross-entropy over every position but each session's last (logits = final hidden state x item
embeddings, full catalog) as `loss`, and its gradients grad.<parameter>.

Exit code 77 means "torch is not installed": ctest reports the parity test as skipped.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common  # noqa: E402

fixture_common.start("reference_attention_backward.py")  # clears a stale COMPLETE marker; exit 77 without torch

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from fixture_common import save_safetensors  # noqa: E402
from reference_models import SessionTransformer  # noqa: E402

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


# name: config of SessionTransformer (reference_models.py), session lengths
SESSION_CASES = {
    "session_pre_relu": ({"model": "session_transformer", "num_items": 40, "embedding_dim": 16, "max_length": 8,
                          "num_heads": 2, "ffn_dim": 24, "num_layers": 2, "activation": "relu", "norm_first": True,
                          "embedding_scale": 1.0, "eps": 1e-5}, [8, 3, 1, 6, 2]),
    "session_post_gelu": ({"model": "session_transformer", "num_items": 30, "embedding_dim": 12, "max_length": 7,
                           "num_heads": 3, "ffn_dim": 20, "num_layers": 1, "activation": "gelu", "norm_first": False,
                           "embedding_scale": 12 ** 0.5, "eps": 1e-5}, [7, 4, 2, 5]),
}


def run_session_case(name, cfg, lengths, out, gen):
    torch.manual_seed(11)
    module = SessionTransformer(cfg).train()
    with torch.no_grad():
        for pname, p in module.named_parameters():
            if pname.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    batch, t = len(lengths), max(lengths)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    items = torch.zeros(batch, t, dtype=torch.int64)
    flat = []
    for b, n in enumerate(lengths):
        row = torch.randint(0, cfg["num_items"], (n,), generator=gen, dtype=torch.int64)
        items[b, :n] = row
        flat.append(row)
    positions = torch.arange(t).unsqueeze(0).expand(batch, t)
    h = module.item_embedding(items) * module.scale + module.position_embedding(positions)
    causal = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
    padding = torch.arange(t).unsqueeze(0) >= lengths_t.unsqueeze(1)
    h = module.final_norm(module.encoder(h, mask=causal, src_key_padding_mask=padding))
    logits = h @ module.item_embedding.weight.t()  # [B, T, N]
    targets = torch.full((batch, t), -100, dtype=torch.int64)
    targets[:, :-1] = items[:, 1:]
    targets[torch.arange(t).unsqueeze(0) >= (lengths_t - 1).unsqueeze(1)] = -100  # last item: no target
    loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["num_items"]), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    offsets = torch.zeros(batch + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths_t, 0)
    tensors.update({"offsets": offsets, "items": torch.cat(flat), "loss": loss.detach().reshape(1)})
    for pname, p in module.named_parameters():
        tensors["grad." + pname] = p.grad.detach().clone()
    save_safetensors(tensors, os.path.join(out, name + ".safetensors"),
                     {"kind": "session_transformer", "recpipe.model": "session_transformer",
                      "recpipe.config": json.dumps(cfg)})


def main():
    args = fixture_common.argument_parser(__doc__).parse_args()
    fixture_common.begin_output(args.out)
    gen = torch.Generator().manual_seed(7)
    for name, spec in CASES.items():
        run_case(name, spec, args.out, gen)
    for name, (cfg, lengths) in SESSION_CASES.items():
        run_session_case(name, cfg, lengths, args.out, gen)
    fixture_common.write_marker(args.out)
    print(f"reference_attention_backward.py: wrote {', '.join(list(CASES) + list(SESSION_CASES))} to {args.out}")


if __name__ == "__main__":
    main()
