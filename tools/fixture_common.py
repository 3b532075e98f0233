# SPDX-License-Identifier: Apache-2.0
# recpipe: what every tools/reference_*.py PyTorch fixture script shares.
"""Shared by the scripts that write PyTorch parity fixtures (tools/reference_*.py).

The protocol with the C++ parity programs (tests/common/parity.hpp), which exit 77 (ctest: skipped)
when their folder has no COMPLETE marker:

    import fixture_common
    fixture_common.start("reference_foo.py")  # before importing torch: clear the stale marker,
    import torch                              # then exit 77 here when torch is missing
    ...
    args = fixture_common.argument_parser(__doc__).parse_args()
    fixture_common.begin_output(args.out)     # create the folder, one torch thread
    fixture_common.save_safetensors({"x": x}, os.path.join(args.out, "case.safetensors"))
    fixture_common.write_marker(args.out)     # last: the folder is complete

Run the scripts with Debian's python (/usr/bin/python3 has python3-torch).
"""

import argparse
import json
import os
import struct
import sys

COMPLETE_MARKER = "COMPLETE"  # written last; the C++ parity programs skip when it is absent
SKIP_EXIT_CODE = 77  # ctest's SKIP_RETURN_CODE for the fixture tests


def out_folder(argv):
    """The value of --out in `argv` ("--out DIR" or "--out=DIR"), or None."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--out="):
            return arg[len("--out="):]
    return None


def clear_marker(argv=None):
    """Deletes the COMPLETE marker of the --out folder: a stale fixture from an earlier run must
    never let the parity tests pass without torch. Call it before importing torch."""
    out = out_folder(sys.argv if argv is None else argv)
    if out is not None:
        marker = os.path.join(out, COMPLETE_MARKER)
        if os.path.exists(marker):
            os.remove(marker)


def start(script, argv=None):
    """clear_marker(), then imports torch and returns it; exits SKIP_EXIT_CODE, saying so, when
    torch is not installed."""
    clear_marker(argv)
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the machine
        print(f"{script}: torch is not installed (apt-get install python3-torch)", file=sys.stderr)
        sys.exit(SKIP_EXIT_CODE)
    return torch


def argument_parser(doc):
    """An argument parser showing the script's docstring, with the required --out folder."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    return parser


def begin_output(out):
    """Creates the output folder; one torch thread, so the fixtures do not depend on the core count."""
    import torch

    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)


def write_marker(out):
    """Writes the COMPLETE marker (the torch version) into `out`: call it after the last fixture."""
    import torch

    with open(os.path.join(out, COMPLETE_MARKER), "w") as marker:
        marker.write(torch.__version__ + "\n")


# --------------------------------------------------------------------------------------------
# safetensors, written by hand (the `safetensors` module is not packaged in Debian 12)


def _dtypes():
    import torch

    return {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2),
            torch.int8: ("I8", 1), torch.int32: ("I32", 4), torch.int64: ("I64", 8)}


def save_safetensors(tensors, path, metadata=None):
    """Writes {name: tensor} like the reference writer: largest dtypes first, then by name, header
    padded with spaces to 8 bytes. Written to a temporary file and renamed, so a reader never sees
    half a file."""
    import torch

    dtypes = _dtypes()
    items = sorted(tensors.items(), key=lambda kv: (-dtypes[kv[1].dtype][1], kv[0]))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, tensor in items:
        tensor = tensor.detach().contiguous().cpu()
        # bytes through numpy where possible; bf16 has no numpy dtype, so view it as int16
        if tensor.dtype == torch.bfloat16:
            data = tensor.view(torch.int16).numpy().tobytes()
        else:
            data = tensor.numpy().tobytes()
        header[name] = {"dtype": dtypes[tensor.dtype][0], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for blob in blobs:
            out.write(blob)
    os.replace(tmp, path)
