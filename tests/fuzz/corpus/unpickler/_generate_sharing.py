# Writes the seeds of fuzz_unpickler (*.pkl here) and fuzz_torch_zip (the same pickles as
# torch.save archives in ../torch_zip/) for pickles that are small but describe huge work through
# sharing: memoised chains, exponential dicts and tuple keys, REDUCEs on one shared argument, a
# rebuild that nests itself. Each stays under run-fuzzers' -max_len. Run once by hand with any
# python3 (no torch needed); the outputs are committed.
import collections
import io
import os
import pickle
import zipfile

here = os.path.dirname(os.path.abspath(__file__))
zip_dir = os.path.join(here, "..", "torch_zip")


class Call:
    """Pickles as fn(*args) (REDUCE); the same args object is memoised across calls."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def write(name, data):
    assert len(data) <= 65536, (name, len(data))
    with open(os.path.join(here, name + ".pkl"), "wb") as f:
        f.write(data)
    with zipfile.ZipFile(os.path.join(zip_dir, name + ".pt"), "w", zipfile.ZIP_STORED) as z:
        for record, payload in (("data.pkl", data), ("byteorder", b"little"), ("version", b"3\n")):
            z.writestr(zipfile.ZipInfo("archive/" + record, date_time=(1980, 1, 1, 0, 0, 0)), payload)


# (chain_1, ..., chain_240): 250 one-tuples each (under the fuzz target's depth limit alone), each
# around the memoised previous chain; by hand, one byte a level (Python's pickler memoises every
# tuple): a 60,000-level tree in 63 KB.
deep = bytearray(b"\x80\x02(")
for i in range(240):
    deep += b")" if i == 0 else b"j" + (i - 1).to_bytes(4, "little")
    deep += b"\x85" * 250 + b"r" + i.to_bytes(4, "little")
write("sharing_deep_chains", bytes(deep + b"t."))

d = {}
for _ in range(40):
    d = {"a": d, "b": d}
write("sharing_dict_bomb", pickle.dumps(d, protocol=2))

k = ()
for _ in range(20):  # Python hashes the key itself; 20 levels is already 2 MB of key text
    k = (k, k)
write("sharing_tuple_key", pickle.dumps({k: None}, protocol=2))

blob_args = (b"x" * 16384,)
write("sharing_bytearray", pickle.dumps([Call(bytearray, blob_args) for _ in range(3000)], protocol=4))

src_args = ({i: 0 for i in range(2000)},)
write("sharing_ordereddict", pickle.dumps([Call(collections.OrderedDict, src_args) for _ in range(2500)],
                                          protocol=2))

list_args = ([0] * 10000,)
write("sharing_set", pickle.dumps([Call(set, list_args) for _ in range(3000)], protocol=2))

# l = [_rebuild_from_type_v2, torch.Tensor, l, None]; _rebuild_from_type_v2(*l)
write("sharing_rebuild_self",
      b"\x80\x02]q\x00(ctorch._tensor\n_rebuild_from_type_v2\nctorch\nTensor\nh\x00Ne"
      b"ctorch._tensor\n_rebuild_from_type_v2\nh\x00R.")
