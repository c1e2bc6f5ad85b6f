"""numba kernels: one pass over a (rows x features) batch updates every feature's state.

One call per batch (or per single row) does: bin lookup, histogram counts, NaN / inf counts,
expected-range outliers, the batch's moments merged into the running ones (Chan et al.), and
the per-row HBOS outlier score. nogil: the monitor can run it while other threads serve.

Bin lookup: a numeric feature's value goes to its cell on a 256-cell grid (one multiply), the
cell's table byte gives the number of edges below the cell, and one comparison finishes the job
(a short loop where edges share a cell; see `fill_bin_grids`); heavy-tailed features, whose
edges crowd the grid, use a branch-free binary search.
Batches go through in blocks copied column by column into an L1-sized buffer; NaN and inf are
counted during the copy and replaced by a finite stand-in taken back afterwards, so each
feature's loop is branch-free, reads contiguous values and keeps its sums in registers.
Measured by benchmarks/stats_ingest.py (speed) and tests/test_stats_properties.py (every path
against numpy).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from stats.layout import (
    GRID_CELLS,
    GRID_MAX_CROWDED_SHARE,
    M_HIGH,
    M_LOW,
    M_M2,
    M_MAX,
    M_MEAN,
    M_MIN,
    M_N,
    N_MOMENTS,
    P_GRID_LO,
    P_GRID_LOG,
    P_GRID_ONE_STEP,
    P_GRID_SCALE,
    P_HBOS_THRESHOLD,
    P_HIGH,
    P_IS_CAT,
    P_LAST_EDGE,
    P_LOW,
    P_N_BINS,
    P_N_INNER_EDGES,
    R_HBOS_OUTLIERS,
    R_ROWS,
    SEARCH_WIDTH,
)


def empty_moments(n_features: int) -> np.ndarray:
    m = np.zeros((n_features, N_MOMENTS))
    m[:, M_MIN] = np.inf
    m[:, M_MAX] = -np.inf
    return m


# Rows of the block path's per-call accumulators.
A_N, A_SUM, A_SQ, A_MIN, A_MAX, A_LOW, A_HIGH, A_SHIFT = range(N_MOMENTS + 1)
BLOCK_VALUES = 2048  # a block's column buffer: 16 KB, well inside L1
MIN_BLOCK_ROWS = 32
# Up to this many rows a call goes row by row with no scratch arrays: numba's allocations
# (~100 ns each) would double a single row's cost.
SMALL_BATCH = 4
# Bin lookups of a numeric column (see fill_bin_grids).
SEARCH, GRID_STEPPING, GRID_ONE_STEP, LOG_GRID_STEPPING, LOG_GRID_ONE_STEP = range(5)


@intrinsic
def float_bits(typingctx, x):
    """The IEEE bits of a float64 as an int64: increasing with x for x > 0."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def bits_float(typingctx, x):
    """The float64 whose IEEE bits are the int64 x (float_bits' inverse)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@njit(inline="always")
def grid_cell(v, lo, scale, log):
    """v's cell on a feature's lookup grid, clamped to the grid; monotone in v (a NaN, which
    never reaches it, would go to cell 0). Linear: equal widths from lo. Log: equal steps of
    the float's bits above lo's (each power of two split alike), `scale` holding the shift."""
    if log:
        w = v if v > lo else lo  # bits of negatives would not be ordered
        c = (float_bits(w) - float_bits(lo)) >> np.int64(scale)
        return c if c < GRID_CELLS - 1 else GRID_CELLS - 1
    c = (v - lo) * scale
    c = c if c > 0.0 else 0.0
    c = c if c < GRID_CELLS - 1.0 else GRID_CELLS - 1.0
    return int(c)


@njit(inline="always")
def _grid_crowding(per_cell, edges, n_search, lo, scale, log):
    """Edges per cell on a candidate grid; returns (edges in cells of three or more, most
    edges in one cell)."""
    per_cell[:] = 0
    for j in range(n_search):
        per_cell[grid_cell(edges[j], lo, scale, log)] += 1
    crowded = 0
    for c in range(GRID_CELLS):
        crowded += per_cell[c] if per_cell[c] > 2 else 0
    return crowded, per_cell.max()


@njit(nogil=True, cache=True)
def fill_bin_grids(model, params, edge_matrix):
    """Each numeric feature's lookup grid: GRID_CELLS cells, e1 in the second and e(k-1) in
    the last but one (the extreme edges e0 and ek are left out, so one far-out baseline value
    cannot stretch the cells), each cell's byte the number of search edges in lower cells.
    grid_cell is monotone, so that number never exceeds the bin of a value in the cell, and
    the kernel steps up past the edges sharing its cell: one comparison when no cell holds two
    edges (P_GRID_ONE_STEP), a short loop otherwise.
    Cells of equal width first; for a positive feature whose edges crowd those (a heavy right
    tail), cells of equal log-width; features with many edges in crowded cells
    (GRID_MAX_CROWDED_SHARE) on both keep the binary search.
    """
    table = model.view(np.uint8)
    first = model.shape[1] * 8 - GRID_CELLS
    per_cell = np.zeros(GRID_CELLS, np.int64)
    for f in range(model.shape[0]):
        params[P_GRID_LO, f] = 0.0
        params[P_GRID_SCALE, f] = 0.0
        params[P_GRID_ONE_STEP, f] = 0.0
        params[P_GRID_LOG, f] = 0.0
        if params[P_IS_CAT, f] > 0.0:
            continue
        n_search = int(params[P_N_INNER_EDGES, f])
        edges = edge_matrix[f]
        lo = edges[1 if n_search >= 3 else 0]
        hi = edges[n_search - 1 if n_search >= 3 else n_search]
        width = (hi - lo) / (GRID_CELLS - 3)
        scale = 1.0 / width if width > 0.0 else 0.0
        if not (scale > 0.0 and scale < np.inf):
            continue
        lo -= 1.5 * width  # lo's edge mid-way into the second cell, hi's into the last but one
        log = False
        crowded, most = _grid_crowding(per_cell, edges, n_search, lo, scale, False)
        if most > 1 and edges[1 if n_search >= 3 else 0] > 0.0:
            # Log cells: the smallest shift that fits [e1, e(k-1)]'s bits into the grid.
            lo_bits = float_bits(edges[1 if n_search >= 3 else 0])
            span = float_bits(hi) - lo_bits
            shift = 0
            while (span >> shift) > GRID_CELLS - 4:
                shift += 1
            start = lo_bits - (np.int64(3) << shift) // 2  # e1 mid-way into the second cell
            if shift >= 1 and start > 0:
                log_lo = bits_float(start)
                log_crowded, log_most = _grid_crowding(per_cell, edges, n_search, log_lo,
                                                       float(shift), True)
                if log_most < most:
                    log, lo, scale, crowded, most = True, log_lo, float(shift), log_crowded, log_most
        if crowded > GRID_MAX_CROWDED_SHARE * n_search:
            continue
        _grid_crowding(per_cell, edges, n_search, lo, scale, log)  # the chosen grid's counts
        below = 0
        for c in range(GRID_CELLS):
            table[f, first + c] = below
            below += per_cell[c]
        params[P_GRID_LO, f] = lo
        params[P_GRID_SCALE, f] = scale
        params[P_GRID_ONE_STEP, f] = 1.0 if most <= 1 else 0.0
        params[P_GRID_LOG, f] = 1.0 if log else 0.0


@njit(inline="always")
def grid_bin(v, model, f, table, first, lo, scale, last_edge, one_step, log):
    """Bin of a finite v by the grid: the cell's count of lower edges, then past its own."""
    pos = np.int64(table[f, first + grid_cell(v, lo, scale, log)])
    pos += model[f, pos] <= v
    if not one_step:  # (a compile-time constant in the block loops)
        while model[f, pos] <= v:
            pos += 1
    return pos + (v > last_edge)


@njit(inline="always")
def search_bin(v, model, f, last_edge):
    """Bin of v by binary search: the count of inner edges <= v (padded with +inf), unrolled
    for SEARCH_WIDTH = 64 (a loop with a runtime trip count runs 4x slower)."""
    pos = 32 * (model[f, 31] <= v)
    pos += 16 * (model[f, pos + 15] <= v)
    pos += 8 * (model[f, pos + 7] <= v)
    pos += 4 * (model[f, pos + 3] <= v)
    pos += 2 * (model[f, pos + 1] <= v)
    pos += model[f, pos] <= v
    pos += model[f, pos] <= v
    return pos + (v > last_edge)


@njit(inline="always")
def category_bin(v, n_bins):
    """A category code's bin; codes out of range (unseen) share the last bin."""
    return int(v) if 0.0 <= v < n_bins - 1.0 else int(n_bins) - 1


@njit(inline="always")
def missing_bin(v, nan_bin):
    return nan_bin if v != v else nan_bin + 1  # NaN, else +-inf


@njit(inline="always")
def value_bin(v, f, model, params, table, first, nan_bin):
    """The bin of any value of feature f: missing, category or numeric bin."""
    if v - v != 0.0:
        b = missing_bin(v, nan_bin)
    elif params[P_IS_CAT, f] > 0.0:
        b = category_bin(v, params[P_N_BINS, f])
    elif params[P_GRID_SCALE, f] > 0.0:
        b = grid_bin(v, model, f, table, first, params[P_GRID_LO, f], params[P_GRID_SCALE, f],
                     params[P_LAST_EDGE, f], False, params[P_GRID_LOG, f] > 0.0)
    else:
        b = search_bin(v, model, f, params[P_LAST_EDGE, f])
    return b


# Its own compiled function (not inlined): the hot loop gets registers to itself, measured
# 5-8% faster than inlined into the block loop; "contract" lets s2 += d * d use an FMA.
@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def numeric_column_pass(col, m, f, model, params, table, first, counts, score, shift, lookup):
    """Bins, counts, HBOS terms and sums of one feature's m finite values in a block.

    `lookup` (SEARCH, GRID_*) is passed as a constant from each call site.
    Sums are taken around `shift` (a value of the batch) so the sum of squares cannot cancel
    catastrophically. No NaN tests (the block copy swapped NaN/inf for stand-ins), and selects
    rather than min()/max() (numba's NaN-aware min is twice as slow): this loop is most of the
    kernel's time.
    """
    lo, scale = params[P_GRID_LO, f], params[P_GRID_SCALE, f]
    last_edge, low, high = params[P_LAST_EDGE, f], params[P_LOW, f], params[P_HIGH, f]
    hbos = model[f, SEARCH_WIDTH:]
    cnt = counts[f]
    s1 = s2 = n_low = n_high = 0.0
    vmin, vmax = np.inf, -np.inf
    for r in range(m):
        v = col[r]
        if lookup == GRID_ONE_STEP:
            b = grid_bin(v, model, f, table, first, lo, scale, last_edge, True, False)
        elif lookup == LOG_GRID_ONE_STEP:
            b = grid_bin(v, model, f, table, first, lo, scale, last_edge, True, True)
        elif lookup == LOG_GRID_STEPPING:
            b = grid_bin(v, model, f, table, first, lo, scale, last_edge, False, True)
        elif lookup == GRID_STEPPING:
            b = grid_bin(v, model, f, table, first, lo, scale, last_edge, False, False)
        else:
            b = search_bin(v, model, f, last_edge)
        cnt[b] += 1
        score[r] += hbos[b]
        d = v - shift
        s1 += d
        s2 += d * d
        vmin = v if v < vmin else vmin
        vmax = v if v > vmax else vmax
        n_low += 1.0 if v < low else 0.0
        n_high += 1.0 if v > high else 0.0
    return s1, s2, vmin, vmax, n_low, n_high


@njit(nogil=True, cache=True, error_model="numpy")
def ingest(x, model, params, counts, moments, scores_out):
    """Update a state in place from the batch x (n x F float64).

    Six arguments on purpose: numba's dispatch costs ~50 ns per argument, which is most of a
    single-row update, so related arrays travel packed:
    model (F x SEARCH_WIDTH + B+2 + GRID_CELLS/8): inner bin edges padded with +inf, -log
      baseline density per bin (HBOS; 0 in the NaN and inf columns), the grid's bytes;
    params (N_PARAMS x F): per-feature constants, one row per field;
    counts ((F+1) x B+2 int64): per feature the histogram, then NaN and inf counts; the last
      row holds the stream counters (rows, HBOS outlier rows, ...);
    moments (F x N_MOMENTS): the running moments;
    scores_out: row scores (length n), or length 0 not to keep them.
    """
    if x.shape[0] <= SMALL_BATCH:
        _ingest_rows(x, model, params, counts, moments, scores_out)
    else:
        _ingest_blocks(x, model, params, counts, moments, scores_out)


@njit(nogil=True, cache=True, error_model="numpy")
def _ingest_rows(x, model, params, counts, moments, scores_out):
    n, n_features = x.shape
    nan_bin = counts.shape[1] - 2
    table = model.view(np.uint8)
    first = model.shape[1] * 8 - GRID_CELLS
    hbos_outliers = 0
    for i in range(n):
        score = 0.0
        for f in range(n_features):
            v = x[i, f]
            # value_bin spelled out: called here (an inline function calling inline functions)
            # it makes a single row's call ~0.2 us (25%) slower.
            is_cat = params[P_IS_CAT, f] > 0.0
            if v - v != 0.0:
                b = missing_bin(v, nan_bin)
            elif is_cat:
                b = category_bin(v, params[P_N_BINS, f])
            elif params[P_GRID_SCALE, f] > 0.0:
                b = grid_bin(v, model, f, table, first, params[P_GRID_LO, f],
                             params[P_GRID_SCALE, f], params[P_LAST_EDGE, f], False,
                             params[P_GRID_LOG, f] > 0.0)
            else:
                b = search_bin(v, model, f, params[P_LAST_EDGE, f])
            counts[f, b] += 1
            score += model[f, SEARCH_WIDTH + b]
            if b >= nan_bin or is_cat:
                continue
            # Welford: Chan's merge with a batch of one.
            total = moments[f, M_N] + 1.0
            delta = v - moments[f, M_MEAN]
            moments[f, M_MEAN] += delta / total
            moments[f, M_M2] += delta * (v - moments[f, M_MEAN])
            moments[f, M_N] = total
            moments[f, M_MIN] = min(moments[f, M_MIN], v)
            moments[f, M_MAX] = max(moments[f, M_MAX], v)
            moments[f, M_LOW] += v < params[P_LOW, f]
            moments[f, M_HIGH] += v > params[P_HIGH, f]
        hbos_outliers += score > params[P_HBOS_THRESHOLD, 0]
        if scores_out.shape[0] == n:
            scores_out[i] = score
    counts[n_features, R_ROWS] += n
    counts[n_features, R_HBOS_OUTLIERS] += hbos_outliers


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _ingest_blocks(x, model, params, counts, moments, scores_out):
    """Blocks of rows copied into an L1-sized column buffer. A NaN or inf is counted while
    copying and replaced by a finite value of its column (the column's shift, so it adds
    nothing to the sums), whose count and HBOS term are taken back after the column's loop:
    the loops then run without a NaN test per value."""
    n, n_features = x.shape
    nan_bin = counts.shape[1] - 2
    table = model.view(np.uint8)
    first = model.shape[1] * 8 - GRID_CELLS
    hbos_threshold = params[P_HBOS_THRESHOLD, 0]
    keep_scores = scores_out.shape[0] == n
    block = min(n, max(MIN_BLOCK_ROWS, BLOCK_VALUES // n_features))
    columns = np.empty((n_features, block))
    score = np.empty(block)
    bad_rows = np.empty((n_features, block), np.int64)  # per column, its stand-ins' rows
    n_bad = np.zeros(n_features, np.int64)
    # Accumulators, one row per quantity, merged into the running moments at the end.
    acc = np.zeros((N_MOMENTS + 1, n_features))
    any_finite = np.zeros(n_features, np.bool_)
    for f in range(n_features):
        # Sums are taken around the batch's first finite value: the sum of squares then never
        # cancels catastrophically, constant data included.
        for i in range(n):
            v = x[i, f]
            if v - v == 0.0:
                acc[A_SHIFT, f] = v
                any_finite[f] = True
                break
        acc[A_MIN, f] = np.inf
        acc[A_MAX, f] = -np.inf
    hbos_outliers = 0
    for start in range(0, n, block):
        m = min(block, n - start)
        n_bad[:] = 0
        for r in range(m):
            for f in range(n_features):
                v = x[start + r, f]
                if v - v != 0.0:
                    counts[f, missing_bin(v, nan_bin)] += 1
                    bad_rows[f, n_bad[f]] = r
                    n_bad[f] += 1
                    v = acc[A_SHIFT, f]
                columns[f, r] = v
        score[:m] = 0.0
        for f in range(n_features):
            if not any_finite[f]:
                continue  # every value missing: counted while copying, nothing else to add
            col = columns[f]
            if params[P_IS_CAT, f] > 0.0:
                n_bins = params[P_N_BINS, f]
                for r in range(m):
                    b = category_bin(col[r], n_bins)
                    counts[f, b] += 1
                    score[r] += model[f, SEARCH_WIDTH + b]
            else:
                # One call per lookup with a constant: each call site gets its own loop.
                shift = acc[A_SHIFT, f]
                log = params[P_GRID_LOG, f] > 0.0
                if params[P_GRID_ONE_STEP, f] > 0.0 and not log:
                    s1, s2, vmin, vmax, n_low, n_high = numeric_column_pass(
                        col, m, f, model, params, table, first, counts, score, shift, GRID_ONE_STEP)
                elif params[P_GRID_ONE_STEP, f] > 0.0:
                    s1, s2, vmin, vmax, n_low, n_high = numeric_column_pass(
                        col, m, f, model, params, table, first, counts, score, shift,
                        LOG_GRID_ONE_STEP)
                elif log:
                    s1, s2, vmin, vmax, n_low, n_high = numeric_column_pass(
                        col, m, f, model, params, table, first, counts, score, shift,
                        LOG_GRID_STEPPING)
                elif params[P_GRID_SCALE, f] > 0.0:
                    s1, s2, vmin, vmax, n_low, n_high = numeric_column_pass(
                        col, m, f, model, params, table, first, counts, score, shift, GRID_STEPPING)
                else:
                    s1, s2, vmin, vmax, n_low, n_high = numeric_column_pass(
                        col, m, f, model, params, table, first, counts, score, shift, SEARCH)
                acc[A_N, f] += m - n_bad[f]
                acc[A_SUM, f] += s1
                acc[A_SQ, f] += s2
                acc[A_MIN, f] = min(acc[A_MIN, f], vmin)
                acc[A_MAX, f] = max(acc[A_MAX, f], vmax)
                acc[A_LOW, f] += n_low
                acc[A_HIGH, f] += n_high
            nb = n_bad[f]
            if nb:  # take the stand-ins back (the shift is a real value: min and max stand)
                stand_in = acc[A_SHIFT, f]
                b = value_bin(stand_in, f, model, params, table, first, nan_bin)
                counts[f, b] -= nb
                term = model[f, SEARCH_WIDTH + b]
                for i in range(nb):
                    score[bad_rows[f, i]] -= term
                if params[P_IS_CAT, f] == 0.0:
                    acc[A_LOW, f] -= nb * (stand_in < params[P_LOW, f])
                    acc[A_HIGH, f] -= nb * (stand_in > params[P_HIGH, f])
        for r in range(m):
            hbos_outliers += score[r] > hbos_threshold
            if keep_scores:
                scores_out[start + r] = score[r]
    counts[n_features, R_ROWS] += n
    counts[n_features, R_HBOS_OUTLIERS] += hbos_outliers
    for f in range(n_features):
        moments[f, M_LOW] += acc[A_LOW, f]
        moments[f, M_HIGH] += acc[A_HIGH, f]
        nb = acc[A_N, f]
        if nb == 0.0:
            continue
        mean_b = acc[A_SHIFT, f] + acc[A_SUM, f] / nb
        m2_b = max(acc[A_SQ, f] - acc[A_SUM, f] * acc[A_SUM, f] / nb, 0.0)
        na = moments[f, M_N]
        total = na + nb
        delta = mean_b - moments[f, M_MEAN]
        moments[f, M_MEAN] += delta * nb / total
        moments[f, M_M2] += m2_b + delta * delta * na * nb / total
        moments[f, M_N] = total
        moments[f, M_MIN] = min(moments[f, M_MIN], acc[A_MIN, f])
        moments[f, M_MAX] = max(moments[f, M_MAX], acc[A_MAX, f])


@njit(nogil=True, cache=True)
def merge_moments(a, b):
    """Moments of the union of two streams (Chan et al.): exact, order-free up to rounding."""
    out = a.copy()
    for f in range(a.shape[0]):
        na = a[f, M_N]
        nb = b[f, M_N]
        total = na + nb
        if nb > 0.0:
            delta = b[f, M_MEAN] - a[f, M_MEAN]
            out[f, M_MEAN] = a[f, M_MEAN] + delta * nb / total
            out[f, M_M2] = a[f, M_M2] + b[f, M_M2] + delta * delta * na * nb / total
            out[f, M_N] = total
            out[f, M_MIN] = min(a[f, M_MIN], b[f, M_MIN])
            out[f, M_MAX] = max(a[f, M_MAX], b[f, M_MAX])
        for k in (M_LOW, M_HIGH):
            out[f, k] = a[f, k] + b[f, k]
    return out
