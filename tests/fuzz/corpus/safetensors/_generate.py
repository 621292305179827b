# Writes the seed corpus for fuzz_safetensors (run once by hand; the outputs are committed).
# Valid files use the reference layout; invalid ones each break one rule.
import json, os, struct

here = os.path.dirname(os.path.abspath(__file__))


def header_bytes(obj, pad=True):
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if pad:
        text += b" " * (-(len(text)) % 8)
    return text


def file_of(obj, data=b"", pad=True, n=None):
    h = header_bytes(obj, pad)
    return struct.pack("<Q", len(h) if n is None else n) + h + data


def t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


seeds = {
    "valid_empty": file_of({}),
    "valid_metadata_only": file_of({"__metadata__": {"format": "pt"}}),
    "valid_one_f32": file_of({"w": t("F32", [2], 0, 8)}, struct.pack("<2f", 1.5, -2.0)),
    "valid_mixed": file_of(
        {"__metadata__": {"format": "pt", "step": "10"},
         "a": t("F64", [], 0, 8), "b": t("I32", [2, 2], 8, 24), "c": t("BF16", [3], 24, 30),
         "d": t("U8", [0, 5], 30, 30), "e": t("F4", [2], 30, 31), "f": t("F8_E4M3", [1], 31, 32)},
        bytes(range(32))),
    "valid_unicode_name": file_of({"gewicht.ß.층": t("F16", [1, 1], 0, 2)}, b"\x00\x3c"),
    "valid_leading_whitespace": struct.pack("<Q", 12) + b"\t\n{}\r       "[:12],
    "bad_truncated_length": b"\x08\x00\x00",
    "bad_header_past_eof": struct.pack("<Q", 1000) + b"{}",
    "bad_overlap": file_of({"a": t("F32", [4], 0, 16), "b": t("F32", [4], 0, 16)}, bytes(16)),
    "bad_hole": file_of({"a": t("F32", [1], 0, 4), "b": t("F32", [1], 8, 12)}, bytes(12)),
    "bad_dtype": file_of({"a": t("F128", [1], 0, 16)}, bytes(16)),
    "bad_trailing_bytes": file_of({"a": t("U8", [1], 0, 1)}, b"\x01XYZ"),
    "bad_metadata_value": file_of({"__metadata__": {"k": 1}}),
    "bad_shape_overflow": file_of({"a": t("F32", [4194305, 4194305, 211106198978564], 0, 16)},
                                  bytes(16)),
    "bad_duplicate_name": struct.pack("<Q", 104)
    + b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}'
    + b"\x07",
    "bad_nul_padding": struct.pack("<Q", 8) + b"{}\x00\x00\x00\x00\x00\x00",
}
for name, data in seeds.items():
    with open(os.path.join(here, name + ".safetensors"), "wb") as f:
        f.write(data)
