"""makedumpfile's dump level: a bitmask of page classes left out of the dump."""

DL_ZERO = 1           # pages that are all zeros
DL_CACHE = 2          # page cache without private data
DL_CACHE_PRIVATE = 4  # all page cache
DL_USER = 8           # user data (anonymous, hugetlb)
DL_FREE = 16          # free pages
MAX_DUMP_LEVEL = 31
# The levels decided from struct page (zero pages are found in the page data).
STRUCT_PAGE_LEVELS = DL_CACHE | DL_CACHE_PRIVATE | DL_USER | DL_FREE
