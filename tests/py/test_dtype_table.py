"""tools/moefile.py's DTYPES against src/dtype.c's table.

The Python writer and reader keep their own table of the data types (ids, names, block
sizes); the engine's is src/dtype.c. The helper mode of the test_quant_types binary prints
the C table, and every row must agree with the Python one, field by field, in both
directions: a type added to one table and not the other fails here. Standard library only."""
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("MOE_ROOT") or os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import moefile  # noqa: E402
import moetest  # noqa: E402


def helper_binary():
    path = moetest.test_binary("test_quant_types")
    if path is None:
        raise RuntimeError("test_quant_types not found (build it, or set MOE_BIN): its table is what this checks")
    return path


def c_table():
    out = subprocess.run([helper_binary(), "dtypes"], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        id_, name, block, block_bytes, row_group, plain = line.split()
        rows[int(id_)] = (name, int(block), int(block_bytes), int(row_group), int(plain))
    return rows


class DTypeTable(unittest.TestCase):
    def test_same_types(self):
        c = c_table()
        self.assertGreaterEqual(len(c), 20, "the helper printed too few types: %r" % sorted(c))
        self.assertEqual(sorted(c), sorted(moefile.DTYPES), "ids in dtype.c vs moefile.DTYPES")
        for i, t in moefile.DTYPES.items():
            plain = t.plain if t.plain is not None else i  # dtype.c: a plain type is its own twin
            self.assertEqual(c[i], (t.name, t.block, t.block_bytes, t.row_group, plain), "dtype %d" % i)


if __name__ == "__main__":
    unittest.main()
