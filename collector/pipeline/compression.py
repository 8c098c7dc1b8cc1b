"""Page compression methods the collector writes: their kdump flags and levels, in one place."""

from __future__ import annotations

# kdump compression flags (makedumpfile diskdump_mod.h DUMP_DH_COMPRESSED_*): the same values
# mark a page in page_desc.flags and the whole file in the header's status.
FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20
PAGE_FLAGS = {"zlib": FLAG_ZLIB, "lzo": FLAG_LZO, "snappy": FLAG_SNAPPY, "zstd": FLAG_ZSTD, "none": 0}

# What vmcore-save writes (readers also know lzo and snappy pages from other tools).
METHODS = ("zstd", "zlib", "none")
# makedumpfile's levels: -z is ZSTD_compressCCtx(level 1), -c is compress2(Z_BEST_SPEED).
DEFAULT_LEVEL = 1
# Accepted levels per method, inclusive: zstd's ZSTD_minCLevel() (-ZSTD_TARGETLENGTH_MAX;
# python-zstandard exports only the maximum) to ZSTD_maxCLevel(), zlib's 0-9.
LEVEL_RANGES = {"zstd": (-(1 << 17), 22), "zlib": (0, 9)}
# --fast: the fastest zstd level whose dumps are no larger than makedumpfile -l's (lzo) on the
# test bed's real vmcores at -d 31 (2026-12-01: 6.1 1 GiB, -3 41.4 MB vs lzo 43.6 MB, -4 43.7 MB;
# 6.1 4 GiB, -3 32.2 MB vs lzo 41.3 MB).
FAST_LEVEL = -3
