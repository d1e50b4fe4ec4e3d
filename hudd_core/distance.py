"""Pairwise Euclidean distances between heatmaps (HUDD step 3), computed as GEMM.

``d(x, y)² = ‖x‖² + ‖y‖² − 2 x·y``: the dot products go through the BLAS/cuBLAS that
torch uses, block by block (on the CPU, rows that fit in memory take one BLAS ``syrk``:
only pairs i < j are needed, half a GEMM's flops), and a compiled epilogue
(``csrc/*/distance_epilogue``) clamps, takes the square root and writes SciPy's condensed
vector directly, so no N×N float64 matrix is ever built. Inputs may be NumPy arrays,
memmaps (read block by block, so X may be larger than RAM) or torch tensors on the CPU or
a GPU.

Accuracy. The GEMM form cancels when two rows are close compared with their norms. Rows
are first centred on the mean of X (distances do not change, norms shrink), and every pair
with ``d² <= tau · (‖x̃‖² + ‖ỹ‖²)`` is recomputed exactly, in float64, from the raw rows.
So identical rows give exactly 0, and any other pair has a relative error of about
``sqrt(D) · u / tau`` at most, with ``u`` the unit roundoff of the GEMM dtype (float32:
6e-8; for D = 50000 and the default ``tau = 0.05`` that is ≤ 3e-4, and typical errors are
100× smaller). float64 input runs the GEMM in float64.

Example:
    >>> import numpy as np
    >>> from hudd_core.distance import pdist
    >>> X = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    >>> pdist(X).round(6)
    array([5., 0., 5.])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hudd_core._ext import _C, compiled_for, resolve_device

DEFAULT_TAU = 0.05
DEFAULT_BLOCK_MEMORY = 1 << 30  # bytes for the working blocks of one GEMM
DENSE_SECOND_LEVEL_BYTES = 4 << 30  # the N × N float32 rows of the second level, at most
SYRK_BYTES = 2 << 30  # CPU: resident rows whose N × N Gram fits here use one syrk call

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class Rows:
    """A matrix read block by block: ``get(a, b)`` returns rows [a, b) on ``device``,
    contiguous, in ``dtype`` (float32 or float64). ``zero_copy`` says that ``get`` returns
    views of the caller's memory (no conversion), so holding them costs nothing."""

    name: str
    n: int
    dim: int
    dtype: torch.dtype
    device: torch.device
    get: Callable[[int, int], torch.Tensor]
    zero_copy: bool = False

    @property
    def itemsize(self) -> int:
        return 8 if self.dtype == torch.float64 else 4


def as_rows(X: ArrayLike, name: str = "X", device: str | torch.device | None = None) -> Rows:
    """Wraps an array, memmap or tensor as :class:`Rows`, validating its shape and dtype."""
    if isinstance(X, torch.Tensor):
        native_device, native = X.device, X.dtype
        if not (native.is_floating_point or native in (torch.int32, torch.int64, torch.bool)):
            raise TypeError(f"{name}: unsupported dtype {native}")
        dtype = (
            torch.float64
            if native == torch.float64 or not native.is_floating_point
            else (torch.float32)
        )
        contiguous = X.is_contiguous()
    else:
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        native_device, native = torch.device("cpu"), X.dtype
        if native.kind not in "fiub":
            raise TypeError(f"{name}: unsupported dtype {native}")
        dtype = torch.float64 if native == np.float64 or native.kind in "iub" else torch.float32
        native = (
            torch.float32
            if native == np.float32
            else torch.float64
            if (native == np.float64)
            else None
        )
        contiguous = X.flags.c_contiguous
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (one row per sample), got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {shape})")
    dev = resolve_device(device, native_device)

    def get(a: int, b: int) -> torch.Tensor:
        block = X[a:b]
        if not isinstance(block, torch.Tensor):
            with warnings.catch_warnings():  # read-only memmaps: we never write to them
                warnings.simplefilter("ignore", UserWarning)
                block = torch.from_numpy(np.ascontiguousarray(block))
        return block.to(device=dev, dtype=dtype).contiguous()

    zero_copy = native == dtype and dev == native_device and contiguous
    return Rows(name, shape[0], shape[1], dtype, dev, get, zero_copy)


def _block_rows(rows: Rows, memory: int, gram_cols: int | None = None) -> int:
    """Rows per block: up to four blocks live at once (two raw, two centred), and the
    GEMM output (rows × ``gram_cols``) stays within 1/16 of ``memory`` so the epilogue
    reads it while it is still warm in cache."""
    per_row = rows.dim * rows.itemsize * 4
    step = memory // max(per_row, 1)
    if gram_cols:
        step = min(step, memory // 16 // (gram_cols * rows.itemsize))
    return int(min(rows.n, max(64, step)))


def _spans(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def shift_row(rows: Rows, sample: int = 256) -> torch.Tensor:
    """The mean of up to ``sample`` evenly spaced rows: the point the rows are centred on.

    Any common shift leaves distances unchanged; one near the data's mean shrinks the
    norms, hence the cancellation, as much as the true mean would, without a pass over X.
    """
    idx = np.unique(np.linspace(0, rows.n - 1, min(sample, rows.n)).astype(np.int64))
    picked = torch.cat([rows.get(int(i), int(i) + 1) for i in idx])
    _check_finite(rows, picked, idx)
    return picked.mean(dim=0)


def _check_finite(rows: Rows, block: torch.Tensor, index: np.ndarray | range) -> None:
    finite = torch.isfinite(block).all(dim=1)
    if not bool(finite.all()):
        bad = int(index[int((~finite).nonzero()[0, 0])])
        raise ValueError(f"{rows.name}: row {bad} contains NaN or inf")


@dataclass
class _Block:
    start: int
    raw: torch.Tensor  # the rows as given, for exact recomputation
    centred: torch.Tensor
    sqnorm: torch.Tensor  # float64 squared norms of the centred rows


def center_rows_reference(raw: torch.Tensor, mean: torch.Tensor):
    """Plain-torch twin of ``_C.center_rows``: ``(raw - mean, squared row norms)``."""
    centred = raw - mean
    return centred, torch.linalg.vector_norm(centred, dim=1, dtype=torch.float64).square()


def center_rows(
    raw: torch.Tensor,
    mean: torch.Tensor,
    centred: torch.Tensor | None = None,
    sqnorm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(raw - mean, float64 squared norms of those rows)`` in one pass (compiled),
    written into ``centred`` and ``sqnorm`` when given (contiguous)."""
    mean = mean.to(raw.dtype).contiguous()
    if not compiled_for(raw):
        c, s = center_rows_reference(raw, mean)
        return (c, s) if centred is None else (centred.copy_(c), sqnorm.copy_(s))
    if centred is None:
        centred = torch.empty_like(raw)
        sqnorm = torch.empty(raw.shape[0], dtype=torch.float64, device=raw.device)
    _C.center_rows(raw, mean, centred, sqnorm)
    return centred, sqnorm


def _centred_block(rows: Rows, a: int, b: int, mean: torch.Tensor, centred=None, sqnorm=None):
    raw = rows.get(a, b)
    centred, sqnorm = center_rows(raw, mean, centred, sqnorm)
    if not bool(torch.isfinite(sqnorm).all()):  # NaN/inf rows poison their norm
        _check_finite(rows, raw, range(a, b))
    return _Block(a, raw, centred, sqnorm)


def _block_reader(rows: Rows, mean: torch.Tensor, step: int, memory: int):
    """Returns ``(read, resident)``: ``read(a, b)`` gives the centred :class:`_Block` of
    rows [a, b). When all centred rows fit in ``memory`` they are centred once and kept
    (``resident``); otherwise every call reads and centres again (bounded memory)."""
    if rows.n * rows.dim * rows.itemsize > memory:
        return (lambda a, b: _centred_block(rows, a, b, mean)), False
    centred = torch.empty((rows.n, rows.dim), dtype=rows.dtype, device=rows.device)
    sqnorm = torch.empty(rows.n, dtype=torch.float64, device=rows.device)
    for a, b in _spans(rows.n, step):
        _centred_block(rows, a, b, mean, centred[a:b], sqnorm[a:b])

    def read_resident(a: int, b: int) -> _Block:
        # Converted sources recompute from the centred rows rather than copy X again.
        raw = rows.get(a, b) if rows.zero_copy else centred[a:b]
        return _Block(a, raw, centred[a:b], sqnorm[a:b])

    return read_resident, True


class _GramBuffer:
    """One buffer reused by every block's GEMM: a fresh N×B output per block would be
    returned to the OS and page-faulted in again each time (a large share of the time at
    small D)."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.buf = torch.empty(size, dtype=dtype, device=device)

    def product(self, bi: _Block, bj: _Block) -> torch.Tensor:
        r, c = bi.centred.shape[0], bj.centred.shape[0]
        return torch.mm(bi.centred, bj.centred.T, out=self.buf[: r * c].view(r, c))


def syrk_upper(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` for a CPU matrix, upper triangle only (the lower one is zeros), with
    the BLAS symmetric rank-k update: half the flops of a GEMM. torch has no syrk, so
    this is SciPy's BLAS; the result is a C-contiguous tensor sharing its memory.

    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> syrk_upper(x)
    tensor([[ 5., 11.],
            [ 0., 25.]])
    """
    from scipy.linalg import blas

    a = x.numpy().T  # Fortran-ordered D × N view: syrk(trans=1) gives aᵀa = x xᵀ
    syrk = blas.dsyrk if x.dtype == torch.float64 else blas.ssyrk
    # The lower triangle of a Fortran-ordered result is the upper one of its C-ordered
    # transpose, which is what the epilogue reads.
    return torch.from_numpy(syrk(1.0, a, trans=1, lower=1).T)


def pdist_epilogue_reference(
    gram: torch.Tensor, bi: _Block, bj: _Block, n: int, tau: float, out: torch.Tensor
) -> None:
    """Plain-torch twin of ``_C.pdist_epilogue`` (the test oracle and the fallback)."""
    d = _block_distances_reference(gram, bi, bj, tau)
    i = torch.arange(bi.start, bi.start + d.shape[0], device=d.device)[:, None]
    j = torch.arange(bj.start, bj.start + d.shape[1], device=d.device)[None, :]
    keep = j > i
    ii, jj = i.expand_as(d)[keep], j.expand_as(d)[keep]
    out[n * ii - ii * (ii + 1) // 2 + (jj - ii - 1)] = d[keep]


def _block_distances_reference(
    gram: torch.Tensor, bi: _Block, bj: _Block, tau: float
) -> torch.Tensor:
    norms = bi.sqnorm[:, None] + bj.sqnorm[None, :]
    d2 = (norms - 2.0 * gram.double()).clamp_min(0.0)
    r, c = (d2 <= tau * norms).nonzero(as_tuple=True)
    for s in range(0, r.numel(), 4096):  # bounded memory for duplicate-heavy inputs
        rs, cs = r[s : s + 4096], c[s : s + 4096]
        diff = bi.raw[rs].double() - bj.raw[cs].double()
        d2[rs, cs] = diff.square().sum(dim=1)
    return d2.sqrt()


def _pdist_epilogue(
    gram: torch.Tensor, bi: _Block, bj: _Block, n: int, tau: float, out: torch.Tensor
) -> None:
    if not compiled_for(gram):
        pdist_epilogue_reference(gram, bi, bj, n, tau, out)
        return
    _C.pdist_epilogue(gram, bi.sqnorm, bj.sqnorm, bi.start, bj.start, bi.raw, bj.raw, tau, n, out)


def _cdist_epilogue(gram: torch.Tensor, bi: _Block, bj: _Block, tau: float, out: torch.Tensor):
    if not compiled_for(gram):
        out.copy_(_block_distances_reference(gram, bi, bj, tau))
        return
    _C.cdist_epilogue(gram, bi.sqnorm, bj.sqnorm, bi.raw, bj.raw, tau, out)


def _progress(total: int, desc: str, enabled: bool):
    from hudd_core.progress import bar

    return bar(total=total, desc=desc, unit="block", enabled=enabled, leave=False)


def pdist_rows(
    rows: Rows,
    *,
    tau: float = DEFAULT_TAU,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
    out: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Condensed distances of a :class:`Rows` source, as a float64 tensor on its device."""
    if rows.n < 2:
        raise ValueError(f"pdist needs at least 2 rows of {rows.name}, got {rows.n}")
    n_pairs = rows.n * (rows.n - 1) // 2
    if out is None:
        out = torch.empty(n_pairs, dtype=torch.float64, device=rows.device)
    elif out.shape != (n_pairs,) or out.dtype != torch.float64 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float64 vector of {n_pairs} entries")
    step = _block_rows(rows, block_memory, gram_cols=rows.n)
    read, resident = _block_reader(rows, shift_row(rows), step, block_memory)
    if resident and rows.device.type == "cpu" and rows.n**2 * rows.itemsize <= SYRK_BYTES:
        whole = read(0, rows.n)
        _pdist_epilogue(syrk_upper(whole.centred), whole, whole, rows.n, tau, out)
        return out
    spans = _spans(rows.n, step)
    total = len(spans) if resident else len(spans) * (len(spans) + 1) // 2
    gram = _GramBuffer(step * (rows.n if resident else step), rows.dtype, rows.device)
    with _progress(total, "distances", progress) as bar:
        for i, (a, b) in enumerate(spans):
            bi = read(a, b)
            # Resident rows: one GEMM against every later row; else block by block.
            for c, d in [(a, rows.n)] if resident else spans[i:]:
                bj = bi if (c, d) == (a, b) else read(c, d)
                _pdist_epilogue(gram.product(bi, bj), bi, bj, rows.n, tau, out)
                bar.update()
    return out


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.cpu().numpy() if t.device.type != "cpu" else t.numpy()


def pdist(
    X: ArrayLike,
    *,
    device: str | torch.device | None = None,
    tau: float = DEFAULT_TAU,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
    out: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Euclidean distances between the rows of ``X`` as SciPy's condensed float64 vector.

    Same result as ``scipy.spatial.distance.pdist(X)`` (within the bound in the module
    docstring), ready for ``fastcluster.linkage``.

    Args:
        X: N × D array, memmap or tensor (float16/32/64; CPU or CUDA).
        device: where to compute; default: where ``X`` lives; ``"auto"``: CUDA if usable.
        tau: pairs with ``d² <= tau·(‖x̃‖²+‖ỹ‖²)`` are recomputed exactly.
        block_memory: bytes for the working blocks (bounds memory whatever N is).
        out: optional preallocated float64 vector (e.g. a memmap) of N(N−1)/2 entries.
        progress: show a progress bar over blocks.

    Example:
        >>> import numpy as np
        >>> pdist(np.eye(3, dtype=np.float32)).round(4)
        array([1.4142, 1.4142, 1.4142])
    """
    rows = as_rows(X, "X", device)
    out_t = None
    if out is not None:
        if rows.device.type != "cpu":
            raise ValueError("out= is only supported when computing on the CPU")
        if not isinstance(out, np.ndarray) or out.dtype != np.float64:
            raise ValueError("out must be a float64 NumPy array")
        out_t = torch.from_numpy(out)
    result = pdist_rows(rows, tau=tau, block_memory=block_memory, out=out_t, progress=progress)
    return out if out is not None else _to_numpy(result)


def cdist(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    device: str | torch.device | None = None,
    tau: float = DEFAULT_TAU,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
    progress: bool = False,
) -> np.ndarray:
    """Euclidean distances between the rows of ``X`` (M × D) and ``Y`` (K × D): M × K float64.

    Example:
        >>> import numpy as np
        >>> cdist(np.zeros((1, 2)), np.array([[3.0, 4.0], [0.0, 1.0]]))
        array([[5., 1.]])
    """
    return _to_numpy(cdist_tensor(X, Y, device=device, tau=tau, block_memory=block_memory,
                                  progress=progress))  # fmt: skip


def cdist_tensor(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    device: str | torch.device | None = None,
    tau: float = DEFAULT_TAU,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
    progress: bool = False,
) -> torch.Tensor:
    """:func:`cdist` returning a float64 tensor on the compute device."""
    xr = as_rows(X, "X", device)
    yr = as_rows(Y, "Y", xr.device)
    if xr.dim != yr.dim:
        raise ValueError(f"X and Y must have the same number of columns: {xr.dim} != {yr.dim}")
    if xr.dtype != yr.dtype:  # one GEMM dtype for both sides
        dtype = torch.float64
        xr.dtype = yr.dtype = dtype
        xr.get, yr.get = _cast(xr.get, dtype), _cast(yr.get, dtype)
    step = _block_rows(xr, block_memory, gram_cols=yr.n)
    mean = shift_row(xr)
    read_x, _ = _block_reader(xr, mean, step, 0)  # X streams
    read_y, _ = _block_reader(yr, mean, step, block_memory // 2)  # Y stays when it fits
    out = torch.empty((xr.n, yr.n), dtype=torch.float64, device=xr.device)
    x_spans, y_spans = _spans(xr.n, step), _spans(yr.n, step)
    gram = _GramBuffer(step * step, xr.dtype, xr.device)
    with _progress(len(x_spans) * len(y_spans), "distances", progress) as bar:
        for a, b in x_spans:
            bi = read_x(a, b)
            for c, d in y_spans:
                bj = read_y(c, d)
                _cdist_epilogue(gram.product(bi, bj), bi, bj, tau, out[a:b, c:d])
                bar.update()
    return out


def _cast(get: Callable[[int, int], torch.Tensor], dtype: torch.dtype):
    return lambda a, b: get(a, b).to(dtype)


# --- HUDD's second-level distance -------------------------------------------------------


def condensed_row_max(condensed: torch.Tensor, n: int) -> torch.Tensor:
    """Largest distance of every point (row maxima of the square matrix)."""
    out = torch.empty(n, dtype=torch.float64, device=condensed.device)
    if compiled_for(condensed):
        _C.condensed_row_max(condensed, n, out)
    else:
        out.copy_(condensed_rows_reference(condensed, n, 0, n, None).max(dim=1).values)
    return out


def condensed_rows_reference(
    condensed: torch.Tensor, n: int, a: int, b: int, scale: torch.Tensor | None
) -> torch.Tensor:
    """Plain-torch twin of ``_C.condensed_rows``: rows [a, b) of the square matrix."""
    i = torch.arange(a, b, device=condensed.device)[:, None]
    j = torch.arange(n, device=condensed.device)[None, :]
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    idx = (n * lo - lo * (lo + 1) // 2 + (hi - lo - 1)).clamp_min(0)
    rows = torch.where(i == j, 0.0, condensed[idx])
    if scale is not None:
        s = scale[a:b, None]
        rows = rows / torch.where(s > 0, s, 1.0)
    return rows.float()


def normalised_rows(condensed: torch.Tensor, n: int, name: str = "D/max") -> Rows:
    """The rows of the distance matrix, each divided by its maximum (HUDD's reference
    scheme), as a :class:`Rows` source built block by block from the condensed vector.
    A row whose maximum is 0 (all points identical) stays 0."""
    scale = condensed_row_max(condensed, n)

    def get(a: int, b: int) -> torch.Tensor:
        if not compiled_for(condensed):
            return condensed_rows_reference(condensed, n, a, b, scale)
        out = torch.empty((b - a, n), dtype=torch.float32, device=condensed.device)
        _C.condensed_rows(condensed, n, a, b, scale, out)
        return out

    return Rows(name, n, n, torch.float32, condensed.device, get)


def second_level_pdist(
    X: ArrayLike,
    *,
    device: str | torch.device | None = None,
    tau: float = DEFAULT_TAU,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
    dense_bytes: int = DENSE_SECOND_LEVEL_BYTES,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """HUDD's clustering distance: ``D = pdist(X)``; each row of the square ``D`` divided
    by its maximum; Euclidean distances between those rows.

    Returns ``(second_level, first_level)``, both condensed float64 vectors: the first is
    what WICD is measured on, the second what Ward linkage runs on.

    When the N × N float32 rows fit in ``dense_bytes`` they are built in one kernel call
    and stay resident, so each level's products read plain resident rows (on the CPU one
    ``syrk``, on a GPU four row blocks against the later rows: 5/8 of a square GEMM's
    flops); otherwise the rows are produced block by block from the condensed vector, in
    ``block_memory``.

    Example:
        >>> import numpy as np
        >>> X = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
        >>> second, first = second_level_pdist(X)
        >>> first.round(6), second.round(3)
        (array([1., 3., 2.]), array([0.601, 1.453, 1.302]))
    """
    rows = as_rows(X, "X", device)
    n = rows.n
    dense = 4 * n * n <= dense_bytes

    def memory(dim: int) -> int:  # dense: the working memory is the rows themselves
        return min(block_memory, max(1 << 20, 4 * n * dim)) if dense else block_memory

    first = pdist_rows(rows, tau=tau, block_memory=memory(rows.dim), progress=progress)
    R = normalised_rows(first, n)
    if dense:
        R = as_rows(R.get(0, n), R.name)
    second = pdist_rows(R, tau=tau, block_memory=memory(n), progress=progress)
    return _to_numpy(second), _to_numpy(first)


def condensed_size(n: int) -> int:
    """Number of pairs of ``n`` points (length of the condensed vector)."""
    return n * (n - 1) // 2
