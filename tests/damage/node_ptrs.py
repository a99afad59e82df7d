#!/usr/bin/env python3
"""node_ptrs.py DATA.MDB [MAX]: offsets of bytes to flip in journal leaf pages.

For tests of damaged LMDB pages (tests/cli/cli_test.sh verify_pages,
tests/server/damaged_pages.sh). LMDB keeps no checksum: a leaf page's node
pointers (the u16 offsets after its 16-byte header) are trusted, so the
high byte of one, xored with 0x5a, sends a read far outside the node. Lists
that byte of the middle pointer of each leaf page that looks like the
journal's (every key 8 bytes: a seq; every record at least 80 bytes, no
big-data node), in file order, at most MAX (default 200), each as
"OFFSET FIRST_SEQ LAST_SEQ" (the page's keys: native u64s). The caller tries them in order and keeps the first
whose flip does kill an unguarded walk: nothing here is left to luck."""
import struct
import sys

P_LEAF, P_OVERFLOW, P_META = 0x02, 0x04, 0x08
F_BIGDATA = 0x01
HEADER_BYTES = 16
NODE_HEADER_BYTES = 8
RECORD_BYTES_MIN = 80      # two hashes and the fields around them

def main():
    path = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    data = open(path, 'rb').read()
    # mm_dbs[FREE_DBI].md_pad of meta page 0 holds the page size
    psize = struct.unpack_from('<I', data, HEADER_BYTES + 24)[0]
    if psize < 512 or psize > 65536 or psize & (psize - 1):
        sys.exit('node_ptrs.py: no LMDB page size in %s' % path)
    found = 0
    for pg in range(2, len(data) // psize):
        base = pg * psize
        flags, lower, upper = struct.unpack_from('<HHH', data, base + 10)
        if flags & (P_OVERFLOW | P_META) or not flags & P_LEAF:
            continue
        if lower < HEADER_BYTES or upper > psize or lower > upper:
            continue
        count = (lower - HEADER_BYTES) // 2
        if count < 4:
            continue
        ptrs = struct.unpack_from('<%dH' % count, data, base + HEADER_BYTES)
        journal_like = True
        for p in ptrs:
            if p < upper or p + 8 > psize:
                journal_like = False
                break
            lo, hi, nflags, ksize = struct.unpack_from('<HHHH', data, base + p)
            if ksize != 8 or nflags & F_BIGDATA or lo | hi << 16 < RECORD_BYTES_MIN:
                journal_like = False
                break
        if not journal_like:
            continue
        first = struct.unpack_from('<Q', data, base + ptrs[0] + NODE_HEADER_BYTES)[0]
        last = struct.unpack_from('<Q', data, base + ptrs[-1] + NODE_HEADER_BYTES)[0]
        print(base + HEADER_BYTES + 2 * (count // 2) + 1, first, last)
        found += 1
        if found >= limit:
            break

main()
