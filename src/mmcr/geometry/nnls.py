"""Batched non-negative least squares over many small problems that share a few Gram matrices.

Mean-field capacity needs one NNLS per (manifold, t-vector) pair: thousands of problems of a few dozen
variables. Their supports range from one variable (compact manifolds) to half of all variables (wide,
high-dimensional manifolds), so a solver that runs every problem for as many iterations as the slowest
one, re-solving from scratch each time, pays for the worst case everywhere. Here each problem's work
tracks its own path:

1. A few Lawson-Hanson steps (one variable enters per step) with the Cholesky factor of the passive
   block extended by one row per entering variable (a triangular solve) and downdated by Givens
   rotations when a variable leaves. Problems with small supports finish here.
2. The rest switch to block principal pivoting (Kim & Park 2011): all violating variables swap sides
   at once, so a support of 25 variables is found in two or three exchanges instead of 25 single
   steps. Each exchange factorises the new passive blocks (grouped by size so that batches carry
   little padding). Where Kim & Park fall back to one swap per step (no progress for three exchanges),
   the problem goes to step 3 instead. Warm starts (e.g. the solution at a neighbouring margin) enter
   here directly.
3. Problems where block pivoting stops improving, or meets a singular passive block (duplicated
   points, fewer features than points), continue the Lawson-Hanson iteration of step 1, which
   terminates for any positive semidefinite Gram matrix.

Every phase removes converged problems from its batch (compaction), so the cost is the sum of the
problems' own iterations. All of it is torch tensor code that runs on the input's device. Written
here because neither scipy (one problem per call, no warm start) nor torch offers a batched NNLS.
"""

from __future__ import annotations

import torch

#: Lawson-Hanson steps before the switch to block pivoting (supports this small finish in step 1).
LH_WARMUP_STEPS = 3
#: Candidates (variables that would enter) after a Lawson-Hanson step from which a problem switches to
#: block pivoting at once: the count predicts the support size (measured correlation 0.97 on wide
#: Gaussian manifolds, where it is ~24 of 50; below 1 on average on compact ones, which finish in a few
#: Lawson-Hanson steps).
BPP_SWITCH = 4
#: Cap on block-pivoting exchanges before the problem goes back to Lawson-Hanson.
BPP_MAX_ITER = 12
#: Exchanges without fewer violated conditions that block pivoting tolerates (Kim & Park use 3).
BPP_TRIES = 3
#: A variable whose squared Cholesky pivot is below this fraction of its Gram diagonal is treated as
#: linearly dependent on the passive ones (it cannot enter; a passive block this close to singular
#: sends a block-pivoting problem to Lawson-Hanson).
DEPENDENCE_EPS = 1e-12
#: Elements of the gathered (problems x support x variables) rows per batched solve; bounds memory.
CHUNK_ELEMENTS = 1 << 21
#: Support sizes shared by at least this many problems get a batched solve of their own (no padding);
#: rarer sizes are padded into shared batches, which saves per-call overhead.
EXACT_GROUP_MIN = 32


def _check_shapes(gram: torch.Tensor, rhs: torch.Tensor, init: torch.Tensor | None) -> None:
    if gram.ndim != 3 or gram.shape[1] != gram.shape[2]:
        raise ValueError(f"gram must be (P, m, m), got {tuple(gram.shape)}")
    if rhs.ndim != 3 or rhs.shape[0] != gram.shape[0] or rhs.shape[2] != gram.shape[1]:
        raise ValueError(f"rhs must be (P, T, m) matching gram {tuple(gram.shape)}, got {tuple(rhs.shape)}")
    if init is not None and tuple(init.shape) != tuple(rhs.shape):
        raise ValueError(f"init must have the shape of rhs {tuple(rhs.shape)}, got {tuple(init.shape)}")


def _cold_start(gram, diag, b, owner, thresh, x, cold: torch.Tensor, max_iter: int):
    """Step 1 for problems without a guess: Lawson-Hanson steps (problems heading for a large support
    switch early); the finished ones are written into ``x``, the others returned as a block-pivoting
    group (problems, start support, Lawson-Hanson state to fall back on)."""
    m = gram.shape[-1]
    st = _LHState.empty(cold.numel(), m, b.device, b.dtype)
    steps = min(LH_WARMUP_STEPS, max_iter)
    status, w = _lawson_hanson(gram, diag, b[cold], owner[cold], thresh[cold], st, steps, BPP_SWITCH)
    done = status == 1
    x[cold[done]] = st.x[done]
    r = torch.nonzero(~done).flatten()
    st = st.select(r)
    start = (st.passive() | (w[r] > thresh[cold[r], None])) & ~st.excluded
    return cold[r], start, st


def nnls_gram(
    gram: torch.Tensor,
    rhs: torch.Tensor,
    tol: float = 1e-12,
    max_iter: int | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Solve ``min_x 0.5 x^T G x - b^T x`` subject to ``x >= 0`` for many ``b`` per Gram matrix.

    This is ``min ||A x - t||^2, x >= 0`` with ``G = A^T A`` and ``b = A^T t``.

    Args:
        gram: (P, m, m) symmetric positive (semi)definite Gram matrices.
        rhs: (P, T, m) right-hand sides; problem (p, k) uses ``gram[p]`` and ``rhs[p, k]``.
        tol: optimality tolerance: at the solution no variable's gradient exceeds ``tol`` times the
            problem's scale (max |b|, at least 1).
        max_iter: cap on Lawson-Hanson steps per problem (default ``3 m``).
        init: optional (P, T, m) boolean guess of each solution's support (a warm start, e.g. ``x > 0``
            of a neighbouring problem; an empty guess means none); the result does not depend on it,
            only the time does.

    Returns:
        (P, T, m) solutions, exact up to rounding (for a singular G, one of the minimisers).

    Raises:
        ValueError: gram is not (P, m, m), or rhs / init do not match it.

    Examples:
        >>> import torch
        >>> from mmcr.geometry import nnls_gram
        >>> A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
        >>> t = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64)
        >>> x = nnls_gram((A.T @ A)[None], (A.T @ t)[None, None])  # P = 1 Gram, T = 1 right-hand side
        >>> x.shape, [round(v, 4) for v in x[0, 0].tolist()]  # as scipy.optimize.nnls(A, t)
        (torch.Size([1, 1, 2]), [1.5, 0.0])
    """
    _check_shapes(gram, rhs, init)
    P, T, m = rhs.shape
    dev, dt = rhs.device, rhs.dtype
    B = P * T
    x = torch.zeros(B, m, device=dev, dtype=dt)
    if B == 0 or m == 0:
        return x.reshape(P, T, m)
    gram = gram.to(dt)
    b = rhs.reshape(B, m)
    owner = torch.arange(P, device=dev).repeat_interleave(T)
    thresh = tol * b.abs().amax(1).clamp_min(1.0)
    max_iter = 3 * m if max_iter is None else int(max_iter)
    diag = gram.diagonal(dim1=1, dim2=2)

    groups = []  # (problems, block-pivoting start, Lawson-Hanson state to fall back on)
    if init is None:
        cold = torch.arange(B, device=dev)
    else:  # an empty guess is no guess: those problems start cold
        guess = init.reshape(B, m).to(device=dev, dtype=torch.bool)
        has = guess.any(1)
        cold = torch.nonzero(~has).flatten()
        warm = torch.nonzero(has).flatten()
        if warm.numel():
            groups.append((warm, guess[warm], None))
    if cold.numel():
        groups.append(_cold_start(gram, diag, b, owner, thresh, x, cold, max_iter))

    for idx, start, st in groups:
        if idx.numel() == 0:
            continue
        # Step 2: block principal pivoting from the current support plus every variable that would enter.
        xb, ok = _block_pivoting(gram, b[idx], owner[idx], thresh[idx], start)
        x[idx[ok]] = xb[ok]
        left = torch.nonzero(~ok).flatten()
        if left.numel() == 0:
            continue
        # Step 3: Lawson-Hanson to the end, from the feasible step-1 iterate, for what block pivoting left.
        st = _LHState.empty(left.numel(), m, dev, dt) if st is None else st.select(left)
        j = idx[left]
        _lawson_hanson(gram, diag, b[j], owner[j], thresh[j], st, max_iter)
        x[j] = st.x
    return x.reshape(P, T, m)


# ----------------------------------------------------------------------------------- Lawson-Hanson
class _LHState:
    """Per-problem Lawson-Hanson state: the feasible iterate ``x``, the passive variables in factor
    order (``order[:, :k]``), and the lower Cholesky factor ``L`` of their Gram block, padded with the
    identity beyond ``k`` so that one batched triangular solve serves every support size."""

    def __init__(self, x, order, k, L, excluded):
        self.x, self.order, self.k, self.L, self.excluded = x, order, k, L, excluded

    @classmethod
    def empty(cls, n: int, m: int, dev, dt) -> _LHState:
        return cls(
            torch.zeros(n, m, device=dev, dtype=dt),
            torch.zeros(n, 0, device=dev, dtype=torch.long),
            torch.zeros(n, device=dev, dtype=torch.long),
            torch.zeros(n, 0, 0, device=dev, dtype=dt),
            torch.zeros(n, m, device=dev, dtype=torch.bool),
        )

    def select(self, idx: torch.Tensor) -> _LHState:
        return _LHState(self.x[idx], self.order[idx], self.k[idx], self.L[idx], self.excluded[idx])

    def assign(self, idx: torch.Tensor, other: _LHState) -> None:
        if other is self:
            return
        K = max(self.order.shape[1], other.order.shape[1])
        self.grow(K)
        other.grow(K)
        self.x[idx], self.order[idx], self.k[idx] = other.x, other.order, other.k
        self.L[idx], self.excluded[idx] = other.L, other.excluded

    def passive(self) -> torch.Tensor:
        K = self.order.shape[1]
        valid = torch.arange(K, device=self.x.device) < self.k[:, None]
        return _spread(self.order, valid, valid, self.x.shape[1])

    def grow(self, K: int) -> None:
        """Make room for ``K`` passive variables (identity padding)."""
        n, K0 = self.order.shape
        if K <= K0:
            return
        dev, dt = self.x.device, self.x.dtype
        L = torch.eye(K, device=dev, dtype=dt).repeat(n, 1, 1)
        L[:, :K0, :K0] = self.L
        self.L = L
        self.order = torch.cat([self.order, torch.zeros(n, K - K0, device=dev, dtype=torch.long)], 1)


def _lawson_hanson(gram, diag, b, owner, thresh, st: _LHState, steps: int, switch_at: int | None = None):
    """Run up to ``steps`` Lawson-Hanson steps on every problem of ``st`` (updated in place); finished
    problems leave the working batch.

    With ``switch_at``, a problem also leaves (for block pivoting) once, after its first step, at least
    that many variables would enter: the count predicts its support size.

    Returns (status, gradient ``b - G x`` at each problem's last iterate); status is 1 where converged,
    2 where switched, 0 where the steps ran out."""
    n, m = b.shape
    dev = b.device
    status = torch.zeros(n, dtype=torch.int8, device=dev)
    w_out = torch.zeros_like(b)
    act = torch.arange(n, device=dev)
    cur = st
    for step in range(max(steps, 0) + 1):
        if act.numel() == 0:
            break
        w = b[act] - _gram_times(gram, owner[act], cur.x, cur.order, cur.k)
        w_out[act] = w
        cand = (w > thresh[act, None]) & ~(cur.passive() | cur.excluded)
        wmax, j = torch.where(cand, w, -torch.inf).max(1)
        go = cand.any(1)
        status[act[~go]] = 1
        if switch_at is not None and step > 0:
            jump = go & (cand.sum(1) >= switch_at)
            status[act[jump]] = 2
            go &= ~jump
        if step == steps or not bool(go.all()):
            st.assign(act, cur)  # write back (leaving problems keep their final state)
        if step == steps:
            break
        act, cur, j = act[go], cur.select(go), j[go]
        if act.numel() == 0:
            break
        entered = _chol_append(gram, diag, owner[act], cur, j)
        dep = torch.nonzero(~entered).flatten()
        cur.excluded[dep, j[dep]] = True  # numerically dependent on the passive set: may not enter
        _feasible_solve(b[act], cur)
    return status, w_out


def _spread(order, values, valid, m):
    """(n, m) tensor with ``values[i, p]`` at column ``order[i, p]`` where ``valid`` and zero elsewhere (the
    padding entries of ``order`` may repeat a real column, so they are routed to a discarded one)."""
    out = torch.zeros(order.shape[0], m + 1, dtype=values.dtype, device=values.device)
    out.scatter_(1, torch.where(valid, order, m), torch.where(valid, values, torch.zeros((), dtype=values.dtype)))
    return out[:, :m]


def _gram_times(gram, owner, x, order, k):
    """``G[owner] @ x`` for ``x`` supported on ``order[:, :k]``, gathering only the used rows."""
    K = int(k.max()) if k.numel() else 0
    if K == 0:
        return torch.zeros_like(x)
    pos = order[:, :K]
    xs = x.gather(1, pos) * (torch.arange(K, device=x.device) < k[:, None])
    return torch.einsum("bk,bkm->bm", xs, gram[owner[:, None], pos])


def _chol_append(gram, diag, owner, s: _LHState, j):
    """Extend each factor by variable ``j`` (one triangular solve). Returns the mask of problems where
    ``j`` entered; elsewhere it is numerically dependent on the passive variables and nothing changes."""
    n = j.numel()
    K = int(s.k.max())
    s.grow(K + 1)
    ar = torch.arange(n, device=j.device)
    if K:
        pos = s.order[:, :K]
        valid = torch.arange(K, device=j.device) < s.k[:, None]
        c = torch.where(valid, gram[owner[:, None], pos, j[:, None]], 0.0)
        l = torch.linalg.solve_triangular(s.L[:, :K, :K], c[..., None], upper=False)[..., 0]
        d2 = diag[owner, j] - (l * l).sum(1)
    else:
        l = None
        d2 = diag[owner, j].clone()
    ok = d2 > DEPENDENCE_EPS * diag[owner, j]
    r, kr = ar[ok], s.k[ok]
    if l is not None:
        s.L[r, kr, :K] = l[ok]
    s.L[r, kr, kr] = torch.sqrt(d2[ok])
    s.order[r, kr] = j[ok]
    s.k[ok] += 1
    return ok


def _factor_solve(b, s: _LHState):
    """Unconstrained minimiser on each passive set, in factor order (zeros beyond ``k``)."""
    K = int(s.k.max()) if s.k.numel() else 0
    if K == 0:
        return torch.zeros(b.shape[0], 0, dtype=b.dtype, device=b.device)
    valid = torch.arange(K, device=b.device) < s.k[:, None]
    L = s.L[:, :K, :K]
    rhs = torch.where(valid, b.gather(1, s.order[:, :K]), 0.0)
    y = torch.linalg.solve_triangular(L, rhs[..., None], upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True)[..., 0]


def _feasible_solve(b, s: _LHState) -> None:
    """Lawson-Hanson's inner loop: move from the feasible ``x`` towards the passive-set minimiser ``z``
    and drop the variables that reach zero (Givens downdates) until ``z`` itself is feasible."""
    n, m = b.shape
    rows = torch.arange(n, device=b.device)
    z = _factor_solve(b, s)
    for _ in range(m + 1):  # each pass removes a variable, so m + 1 passes always suffice
        K = z.shape[1]
        valid = torch.arange(K, device=b.device) < s.k[rows, None]
        bad = valid & (z <= 0)
        hit = bad.any(1)
        good = rows[~hit]
        if good.numel():
            s.x[good] = _spread(s.order[good, :K], z[~hit], valid[~hit], m)
        if not bool(hit.any()):
            return
        rows, z, valid, bad = rows[hit], z[hit], valid[hit], bad[hit]
        xo = s.x[rows].gather(1, s.order[rows, :K])
        ratio = torch.where(bad, xo / (xo - z), torch.full_like(xo, torch.inf))
        step, first = ratio.min(1)
        xo = xo + step[:, None] * (z - xo)
        leave = valid & (xo <= 0)
        leave[torch.arange(rows.numel(), device=b.device), first] = True
        sub = s.select(rows)
        # A positive step shrinks the passive set, so a variable dependent on it before may enter now. A
        # zero step means the entering variable itself went non-positive (only possible through rounding
        # when it is nearly dependent): it may not enter again until the passive set changes.
        zero = step <= 0
        sub.excluded[~zero] = False
        lz = torch.nonzero(zero[:, None] & leave)
        sub.excluded[lz[:, 0], sub.order[lz[:, 0], lz[:, 1]]] = True
        sub.x = _spread(sub.order[:, :K], xo, valid & ~leave, m)
        while bool(leave.any()):
            has = leave.any(1)
            q = torch.where(has, leave.to(torch.int8).argmax(1), sub.k)  # first leaving position
            _chol_delete(sub, q)
            keep = torch.arange(K, device=b.device)[None, :] < q[:, None]
            shifted = torch.cat([leave[:, 1:], torch.zeros_like(leave[:, :1])], 1)
            leave = torch.where(keep | ~has[:, None], leave, shifted)
        s.assign(rows, sub)
        z = _factor_solve(b[rows], sub)
    raise RuntimeError("Lawson-Hanson inner loop did not terminate")


def _chol_delete(s: _LHState, q: torch.Tensor) -> None:
    """Remove passive position ``q`` from each factor (``q >= k``: no change) by deleting its row and
    restoring the triangle with Givens rotations on column pairs (Golub & Van Loan, sec. 6.5)."""
    n, K, _ = s.L.shape
    dev, dt = s.L.device, s.L.dtype
    has = q < s.k
    if not bool(has.any()) or K == 0:
        return
    ar = torch.arange(K, device=dev)
    src = (ar[None, :] + (ar[None, :] >= q[:, None]).long()).clamp_max(K - 1)
    src = torch.where(has[:, None], src, ar[None, :])
    L = s.L.gather(1, src[:, :, None].expand(n, K, K))
    order = s.order.gather(1, src)
    k_new = torch.where(has, s.k - 1, s.k)
    lo = int(q[has].min())
    hi = int(s.k[has].max()) - 1
    for c in range(lo, hi):
        act = has & (q <= c) & (c < s.k - 1)
        a, bb = L[:, c, c], L[:, c, c + 1]
        r = torch.hypot(a, bb)
        use = act & (r > 0)
        cs = torch.where(use, a / torch.where(use, r, 1.0), 1.0)[:, None]
        sn = torch.where(use, bb / torch.where(use, r, 1.0), 0.0)[:, None]
        col0, col1 = L[:, :, c].clone(), L[:, :, c + 1]
        L[:, :, c] = cs * col0 + sn * col1
        L[:, :, c + 1] = cs * col1 - sn * col0
    pad = ar[None, :] >= k_new[:, None]
    eye = torch.eye(K, device=dev, dtype=dt)
    s.L = torch.where(pad[:, :, None] | pad[:, None, :], eye, L)
    s.order = torch.where(pad, 0, order)
    s.k = k_new


# ------------------------------------------------------------------------------ block pivoting
def _block_pivoting(gram, b, owner, thresh, F):
    """Kim & Park's block principal pivoting from the passive sets ``F`` (n, m).

    Returns (x, converged). A problem stops, unconverged, when the number of violated conditions has
    not fallen for three exchanges (where the method's own backup rule would fall back to one swap per
    step), after ``BPP_MAX_ITER`` exchanges, or when its passive block is numerically singular."""
    n, m = b.shape
    dev = b.device
    x = torch.zeros_like(b)
    ok = torch.zeros(n, dtype=torch.bool, device=dev)
    act = torch.arange(n, device=dev)
    tries = torch.full((n,), BPP_TRIES, device=dev)
    best = torch.full((n,), m + 1, device=dev)
    F = F.clone()
    for _ in range(BPP_MAX_ITER):
        if act.numel() == 0:
            break
        Fa = F[act]
        xa, w, solved = _passive_solve(gram, b[act], owner[act], Fa)
        viol = (Fa & (xa < 0)) | (~Fa & (w > thresh[act, None]))
        nv = viol.sum(1)
        conv = solved & (nv == 0)
        x[act[conv]] = xa[conv]
        ok[act[conv]] = True
        better = nv < best[act]
        tries[act] = torch.where(better, BPP_TRIES, tries[act] - 1)
        best[act] = torch.minimum(best[act], nv)
        go = solved & ~conv & (tries[act] >= 0)
        act, viol = act[go], viol[go]
        F[act] ^= viol
    return x, ok


def _passive_solve(gram, b, owner, F):
    """Minimiser on each passive set ``F`` (zeros elsewhere), the gradient ``b - G x``, and whether the
    passive block was safely positive definite. Problems are sorted by support size; sizes shared by
    many problems are solved in groups of exactly that size (no padding), the few problems of rare
    sizes together in one padded batch (fewer, larger batched calls)."""
    n, m = b.shape
    dev = b.device
    k = F.sum(1)
    order = torch.argsort(k)
    sizes, counts = torch.unique_consecutive(k[order], return_counts=True)
    b_s, F_s = b[order], F[order]
    rowbase = owner[order] * m
    flat = gram.reshape(-1, m)
    x_s = torch.zeros_like(b_s)
    w_s = b_s.clone()
    ok_s = torch.ones(n, dtype=torch.bool, device=dev)
    run: list[int] = []  # [start, end, smallest, largest size] of a run of rare sizes, padded to the largest
    start = 0
    for K, cnt in zip(sizes.tolist(), counts.tolist()):
        end = start + cnt
        if K > 0 and cnt < EXACT_GROUP_MIN:
            if run and (K > 2 * run[2] + 2 or (end - run[0]) * K * m > CHUNK_ELEMENTS):
                _solve_chunk(flat, rowbase, b_s, F_s, x_s, w_s, ok_s, slice(run[0], run[1]), run[3], True)
                run = []
            run = [start, end, K, K] if not run else [run[0], end, run[2], K]
        elif K > 0:
            if run:  # runs are contiguous: solve the pending one first
                _solve_chunk(flat, rowbase, b_s, F_s, x_s, w_s, ok_s, slice(run[0], run[1]), run[3], True)
                run = []
            step = max(1, CHUNK_ELEMENTS // (K * m))
            for c0 in range(start, end, step):
                _solve_chunk(flat, rowbase, b_s, F_s, x_s, w_s, ok_s, slice(c0, min(c0 + step, end)), K, False)
        start = end
    if run:
        _solve_chunk(flat, rowbase, b_s, F_s, x_s, w_s, ok_s, slice(run[0], run[1]), run[3], True)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(n, device=dev)
    return x_s[inv], w_s[inv], ok_s[inv]


def _solve_chunk(flat, rowbase, b_s, F_s, x_s, w_s, ok_s, sl, K, padded):
    """One batched Cholesky solve for the problems ``sl`` (supports of exactly ``K`` variables, or of at
    most ``K`` when ``padded``: the blocks are then completed with the identity), written into the
    ``*_s`` outputs."""
    m = flat.shape[1]
    dev, dt = flat.device, flat.dtype
    Fc = F_s[sl]
    if padded:
        pos = Fc.to(torch.int8).topk(K, dim=1, sorted=False).indices
        valid = Fc.gather(1, pos)
    else:
        pos = torch.nonzero(Fc)[:, 1].view(-1, K)
    g = pos.shape[0]
    rows = flat.index_select(0, (rowbase[sl, None] + pos).view(-1)).view(g, K, m)
    sub = rows.gather(2, pos[:, None, :].expand(g, K, K))
    eye = torch.eye(K, device=dev, dtype=dt)
    if padded:
        sub = torch.where(valid[:, :, None] & valid[:, None, :], sub, eye)
    L, info = torch.linalg.cholesky_ex(sub)
    piv = L.diagonal(dim1=1, dim2=2) ** 2
    good = (info == 0) & (piv >= DEPENDENCE_EPS * sub.diagonal(dim1=1, dim2=2)).all(1)
    if not bool(good.all()):
        L = torch.where(good[:, None, None], L, eye)
    rhs = b_s[sl].gather(1, pos)
    if padded:
        rhs = torch.where(valid, rhs, 0.0)
    sol = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    if padded:
        sol = torch.where(valid, sol, 0.0)
    x_s[sl].scatter_(1, pos, sol)
    w_s[sl] = b_s[sl] - torch.bmm(sol[:, None, :], rows)[:, 0]
    ok_s[sl] = good & torch.isfinite(sol).all(1)
