"""The layout of stats/ state arrays: which column or entry holds what. A leaf module.

Every array the numba kernels read or write is indexed by these names: the schema's params and
model rows, a state's moments, row counters and missing-value kinds. One place, so the kernels,
the schema, the state and the verdicts agree, and no module needs another for a constant.
"""

from __future__ import annotations

NUMERIC = "numeric"
CATEGORICAL = "categorical"

# The kernel's unrolled binary search covers this many inner edges (see stats.kernels).
SEARCH_WIDTH = 64
MAX_NUMERIC_BINS = SEARCH_WIDTH - 1
# Bin lookup grid: this many equal cells over a feature's central range, each holding the number
# of edges below it (one byte), so most values find their bin with one table read and one
# comparison instead of a binary search. Stored as bytes at the end of each row of Schema.model.
GRID_CELLS = 256
# A feature with more than this share of its edges in cells of three or more (a heavy tail
# squeezes most bins into a few cells) keeps the binary search: the grid would step too often.
GRID_MAX_CROWDED_SHARE = 0.2

# Columns of Schema.params, read by the numba kernels.
(P_IS_CAT, P_N_INNER_EDGES, P_LAST_EDGE, P_LOW, P_HIGH, P_N_BINS, P_HBOS_THRESHOLD,
 P_GRID_LO, P_GRID_SCALE, P_GRID_ONE_STEP, P_GRID_LOG) = range(11)  # P_GRID_SCALE 0: search
N_PARAMS = 11

# Columns of a state's `moments` array (F x M).
M_N, M_MEAN, M_M2, M_MIN, M_MAX, M_LOW, M_HIGH = range(7)
N_MOMENTS = 7

# Entries of a state's `rows` array: the kernel counts the first two, to_batch the others.
R_ROWS, R_HBOS_OUTLIERS, R_RAGGED, R_EXTRA_VALUES = range(4)
N_ROW_COUNTERS = 4

# Columns of a state's `kinds` array: why a value is missing before it reaches the kernel.
K_NULL, K_ABSENT, K_TYPE = range(3)
N_KINDS = 3
KIND_NAMES = ("null", "absent", "wrong_type")  # plus "nan" and "inf", counted by the kernel
