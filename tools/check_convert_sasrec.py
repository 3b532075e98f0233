# SPDX-License-Identifier: Apache-2.0
# recpipe: tools/convert_sasrec.py on bad checkpoints and options must fail with a clear message.
"""Runs tools/convert_sasrec.py (its main(), and twice as a subprocess) on bad input and checks that it
exits non-zero with a message naming the problem, and on one good file that it succeeds:

  unknown layout, a checkpoint whose tensor shapes do not match (naming the tensor and both
  shapes), a missing tensor, a wrong --maxlen for the position table, a --heads that does not
  divide the width, a missing --heads, a file that is not a checkpoint, a missing file, NaN
  weights, and tensors of the other layout.

    /usr/bin/python3 tools/check_convert_sasrec.py --out build/convert_check

Exit 0 when every check holds, 1 otherwise, 77 without torch (ctest: skipped).
"""

import contextlib
import io
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common  # noqa: E402

fixture_common.start("check_convert_sasrec.py")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERTER = os.path.join(HERE, "convert_sasrec.py")


def sasrec_pytorch_state(d=8, heads=2, blocks=1, maxlen=5, items=10):
    import reference_sasrec

    return reference_sasrec.SASRecPyTorch(items, d, heads, blocks, maxlen, "2023").state_dict()


def recbole_state():
    import reference_sasrec

    return reference_sasrec.RecBoleSASRec(10, 8, 2, 1, 16, 5).state_dict()


def run(checkpoint, *options, out, subprocess_run=False):
    """(exit code, output) of the converter: as a subprocess, or in-process through its main()
    (the same code path without the cost of another torch import)."""
    argv = [checkpoint, "--out", os.path.join(out, "converted.safetensors")] + list(options)
    if subprocess_run:
        result = subprocess.run([sys.executable, CONVERTER] + argv, capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr
    import convert_sasrec

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = convert_sasrec.main(argv)
    return code, text.getvalue()


def main():
    args = fixture_common.argument_parser(__doc__).parse_args()
    fixture_common.begin_output(args.out)
    torch.manual_seed(0)
    failures = []

    def save(name, state):
        path = os.path.join(args.out, name + ".pth")
        torch.save(state, path)
        return path

    def expect(what, code_and_text, ok, *needles):
        code, text = code_and_text
        good = (code == 0) if ok else (code == 1)
        missing = [n for n in needles if n not in text]
        status = "ok" if good and not missing else "FAIL"
        print(f"{status}: {what}: exit {code}: {text.strip().splitlines()[-1] if text.strip() else '(no output)'}")
        if status == "FAIL":
            failures.append(what)
            if missing:
                print(f"  expected the message to contain {missing}")

    out = args.out
    good = save("good", sasrec_pytorch_state())
    expect("a good SASRec.pytorch checkpoint converts", run(good, "--layout", "sasrec-pytorch", "--heads", "2",
                                                           "--maxlen", "5", out=out, subprocess_run=True), True,
           "converted.safetensors")
    expect("unknown layout", run(good, "--layout", "bert4rec", "--heads", "2", out=out, subprocess_run=True), False,
           "unknown layout 'bert4rec'", "sasrec-pytorch, recbole")

    state = sasrec_pytorch_state()
    state["attention_layers.0.out_proj.weight"] = torch.zeros(8, 6)
    expect("misshaped tensor", run(save("misshaped", state), "--layout", "sasrec-pytorch", "--heads", "2", "--maxlen",
                                   "5", out=out), False,
           "tensor 'attention_layers.0.out_proj.weight' has shape [8, 6]", "needs [8, 8]")

    state = sasrec_pytorch_state()
    del state["forward_layers.0.conv2.bias"]
    expect("missing tensor", run(save("missing", state), "--layout", "sasrec-pytorch", "--heads", "2", "--maxlen", "5",
                                 out=out), False, "tensor 'forward_layers.0.conv2.bias' is missing")

    expect("--maxlen that does not fit the position table",
           run(good, "--layout", "sasrec-pytorch", "--heads", "2", "--maxlen", "9", out=out), False,
           "tensor 'pos_emb.weight' has 6 rows but --maxlen 9 needs 10")
    expect("--heads that does not divide the width",
           run(good, "--layout", "sasrec-pytorch", "--heads", "3", "--maxlen", "5", out=out), False,
           "--heads 3 does not divide the embedding width 8")
    expect("no --heads", run(good, "--layout", "sasrec-pytorch", "--maxlen", "5", out=out), False, "--heads is required")
    expect("SASRec.pytorch weights read as RecBole", run(good, "--layout", "recbole", "--heads", "2", out=out), False,
           "tensor 'item_embedding.weight' is missing")

    state = recbole_state()
    state["trm_encoder.layer.0.feed_forward.dense_2.weight"] = torch.zeros(8, 12)
    expect("RecBole misshaped feed-forward", run(save("recbole_misshaped", state), "--layout", "recbole", "--heads", "2",
                                                 out=out), False,
           "tensor 'trm_encoder.layer.0.feed_forward.dense_2.weight' has shape [8, 12]", "needs [8, 16]")
    state = recbole_state()
    state["trm_encoder.layer.0.extra.weight"] = torch.zeros(2)
    expect("RecBole tensor the layout does not know", run(save("recbole_extra", state), "--layout", "recbole", "--heads",
                                                          "2", out=out), False, "unexpected tensors",
           "trm_encoder.layer.0.extra.weight")
    state = recbole_state()
    state["LayerNorm.weight"][3] = float("nan")
    expect("NaN weights", run(save("recbole_nan", state), "--layout", "recbole", "--heads", "2", out=out), False,
           "tensor 'input_norm.weight' holds NaN")

    not_a_checkpoint = os.path.join(out, "notes.pth")
    with open(not_a_checkpoint, "w") as f:
        f.write("not a checkpoint\n")
    expect("a file that is not a checkpoint", run(not_a_checkpoint, "--layout", "recbole", "--heads", "2", out=out),
           False, "cannot be read by torch.load")
    expect("a missing file", run(os.path.join(out, "absent.pth"), "--layout", "recbole", "--heads", "2", out=out),
           False, "no such file")
    save("tensor_list", [torch.zeros(2)])
    expect("a pickle without a state_dict", run(os.path.join(out, "tensor_list.pth"), "--layout", "recbole", "--heads",
                                                "2", out=out), False, "holds no state_dict")

    if failures:
        print(f"check_convert_sasrec.py: {len(failures)} check(s) failed: {failures}")
        return 1
    print("check_convert_sasrec.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
