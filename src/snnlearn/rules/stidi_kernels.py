"""Event-driven numba kernels of STiDi-BP (see :mod:`snnlearn.rules.stidi` for the equations).

One sample at a time, as the paper trains. The network is described by integer tables:

``lay[l]`` (one row per layer, ``_K_*`` columns): kind (0 conv, 1 pool, 2 fc), input geometry
``cin, h, w``, ``cout`` and kernel ``k`` (conv) / pool size ``k``, ``nin, nout`` (neurons), the
weight offset into the flat weight buffer, the offsets of the layer's input and output times in
the flat times buffer, the index of the learnable layer (-1 for pooling) and the offset / count of
its scaling factors α.

Forward (Eqs. 1-2, 22). PL-PSP potentials are piecewise linear in t with integer breakpoints, so
``v(t + 1) = v(t) + α·(R(t)/τ1 − F(t)/τ2)`` where ``R(t)`` sums the weights of inputs spiking in
``(t − τ1, t]`` (rising edge) and ``F(t)`` those in ``(t − τ, t − τ1]`` (falling edge); inputs older
than τ no longer count. A neuron fires at the first grid step with ``v ≥ θ`` (or ``v > θ``).
Conv neurons (≤ cin·k² inputs each) jump from breakpoint to breakpoint and only step inside the
segment where the potential reaches θ; fully connected layers accumulate the weight rows of the
inputs of each time bin once and then step all neurons together.

Backward (Eqs. 4-21, 23-25), top-down: each learnable layer first computes the displacement of
the layer below (Eq. 14) from its weights *before* its own update, then updates itself. Since the
layers below are updated later, every target comes from the pre-update weights.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import HAVE_NUMBA, njit
from ..backend import numba as _numba
from .single_spike import HAVE_NUMBA as _CORE_NUMBA

if HAVE_NUMBA and _CORE_NUMBA:
    from .single_spike import nb_normalise, nb_relative_targets, nb_strict_outcome

    # The row loop of the FC update carries two sums (Eq. 14); letting LLVM reassociate them is
    # what vectorises the loop. Only the summation order changes (the weight update itself has no
    # reduction), which the tests bound at 1e-12. Same options as ``backend.njit`` otherwise (the
    # backend module offers no fastmath variant; its numba import and guard are reused here).
    _njit_sum = _numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})

    @_njit_sum
    def _fc_row(row, u, v, g):  # pragma: no cover - compiled
        """One presynaptic row: the two sums of Eq. 14 (rising, falling) and Eq. 10 in place.

        ``u``, ``v``, ``g`` depend only on the presynaptic time (see the caller), so the loop is
        contiguous and gather-free. ``u = c·[rising]`` with an indicator in {0, 1}, so ``u·w``
        equals ``(c·w)·[rising]`` exactly; ``g = −η c ε`` is the same product as before."""
        ar = 0.0
        af = 0.0
        for i in range(row.shape[0]):
            wv = row[i]
            ar += u[i] * wv
            af += v[i] * wv
            row[i] = wv + g[i]  # ε = 0 for t_i < t_j: Eq. 6
        return ar, af

    @_njit_sum
    def _fc_row4(r0, r1, r2, r3, u, v, g):  # pragma: no cover - compiled
        """:func:`_fc_row` on four rows of one time group at once: ``u``, ``v``, ``g`` are loaded
        once for the four rows, and four memory streams are in flight."""
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        f0 = 0.0
        f1 = 0.0
        f2 = 0.0
        f3 = 0.0
        for i in range(r0.shape[0]):
            ui = u[i]
            vi = v[i]
            gi = g[i]
            w0 = r0[i]
            w1 = r1[i]
            w2 = r2[i]
            w3 = r3[i]
            a0 += ui * w0
            a1 += ui * w1
            a2 += ui * w2
            a3 += ui * w3
            f0 += vi * w0
            f1 += vi * w1
            f2 += vi * w2
            f3 += vi * w3
            r0[i] = w0 + gi
            r1[i] = w1 + gi
            r2[i] = w2 + gi
            r3[i] = w3 + gi
        return a0, a1, a2, a3, f0, f1, f2, f3

    @_njit_sum
    def _row_dot(row, u):  # pragma: no cover - compiled
        """``Σ_i u_i w_i`` over one row (the silent block of Eq. 14)."""
        ar = 0.0
        for i in range(row.shape[0]):
            ar += u[i] * row[i]
        return ar

# lay columns
(_K_KIND, _K_CIN, _K_H, _K_W, _K_COUT, _K_K, _K_NIN, _K_NOUT, _K_WOFF, _K_TIN, _K_TOUT, _K_LIDX,
 _K_AOFF, _K_NA) = range(14)
N_LAY_COLS = 14
CONV, POOL, FC = 0, 1, 2
# ip (integer parameters)
(_P_TMAX, _P_TAU1, _P_TAU2, _P_STRICT, _P_NORM, _P_TRULE, _P_CLAMP, _P_ROUTE, _P_EQ15, _P_BINARY,
 _P_DISP_EFF, _P_DISP_SILENT, _P_LEARN_ON, _P_PSP_TIME) = range(14)
N_IP = 14
# learn_on codes
LEARN_ALL, LEARN_WRONG, LEARN_MARGIN = 0, 1, 2
# fp columns per learnable layer
_F_THETA, _F_LR, _F_BETA, _F_LRA = range(4)

if HAVE_NUMBA and _CORE_NUMBA:

    @njit
    def _conv_forward(tin, Wf, alpha, aoff, na, cin, h, w, cout, k, theta, strict, tau1, tau2, t_max,
                      tout, keys, taps, Wt, R, F, V, fired):  # pragma: no cover - compiled
        """Conv layer, valid padding, stride 1: first crossing of every neuron (Eqs. 1-2, 22).

        Per position, the active inputs are sorted by time once and all maps walk the shared
        breakpoints (input time, +τ1, +τ) together; between breakpoints every potential is
        linear, so a map only steps through the one segment in which it reaches θ."""
        ho = h - k + 1
        wo = w - k + 1
        kk = k * k
        nt = cin * kk
        tau = tau1 + tau2
        for tap in range(nt):  # tap-major copy: the maps of one tap are contiguous
            for d in range(cout):
                Wt[tap, d] = Wf[d * nt + tap]
        for d in range(cout):
            V[d] = alpha[aoff + (d if na > 1 else 0)]  # V holds α until the walk starts
        al = V[:cout].copy()
        M = np.empty(cout)
        E = np.empty(cout)
        for y in range(ho):
            for x in range(wo):
                n = 0
                for c in range(cin):
                    for a in range(k):
                        base = c * h * w + (y + a) * w + x
                        for b in range(k):
                            t = tin[base + b]
                            if t < t_max:
                                key = t * nt + c * kk + a * k + b
                                r = n  # insertion sort (n <= cin·k²)
                                while r > 0 and keys[r - 1] > key:
                                    keys[r] = keys[r - 1]
                                    r -= 1
                                keys[r] = key
                                n += 1
                for d in range(cout):
                    tout[d * ho * wo + y * wo + x] = t_max
                if n == 0:
                    continue
                for r in range(n):
                    taps[r] = keys[r] % nt
                    keys[r] = keys[r] // nt  # times, sorted
                for d in range(cout):
                    R[d] = 0.0
                    F[d] = 0.0
                    V[d] = 0.0
                    fired[d] = 0
                alive = cout
                p0 = 0
                p1 = 0
                p2 = 0
                tc = keys[0]
                while alive > 0:
                    # apply the breakpoints at tc
                    while p0 < n and keys[p0] == tc:
                        row = Wt[taps[p0]]
                        for d in range(cout):
                            R[d] += row[d]
                        p0 += 1
                    while p1 < p0 and keys[p1] + tau1 == tc:
                        row = Wt[taps[p1]]
                        for d in range(cout):
                            R[d] -= row[d]
                            F[d] += row[d]
                        p1 += 1
                    while p2 < p1 and keys[p2] + tau == tc:
                        row = Wt[taps[p2]]
                        for d in range(cout):
                            F[d] -= row[d]
                        p2 += 1
                    nb = t_max - 1
                    if p0 < n and keys[p0] < nb:
                        nb = keys[p0]
                    if p1 < p0 and keys[p1] + tau1 < nb:
                        nb = keys[p1] + tau1
                    if p2 < p1 and keys[p2] + tau < nb:
                        nb = keys[p2] + tau
                    if nb <= tc or p2 == n:  # end of the grid, or every input has expired
                        break
                    ln = nb - tc
                    hit = False
                    for d in range(cout):  # branch-free, vectorisable
                        M[d] = al[d] * (R[d] / tau1 - F[d] / tau2)
                        E[d] = V[d] + M[d] * ln
                        hit |= (E[d] > theta) if strict else (E[d] >= theta)
                    if hit:
                        for d in range(cout):
                            if fired[d] or not ((E[d] > theta) if strict else (E[d] >= theta)):
                                continue
                            for t in range(tc + 1, nb + 1):
                                vt = V[d] + M[d] * (t - tc)
                                if (vt > theta) if strict else (vt >= theta):
                                    tout[d * ho * wo + y * wo + x] = t
                                    break
                            fired[d] = 1
                            E[d] = -np.inf  # a neuron fires once: keep it out of the test above
                            alive -= 1
                    for d in range(cout):
                        V[d] = E[d]
                    tc = nb

    @njit
    def _pool_forward(tin, c, h, w, k, tout, win, tin_base):  # pragma: no cover - compiled
        """First-spike max pooling: earliest input of each window; ties go to the first index."""
        ho = h // k
        wo = w // k
        for n in range(c):
            for y in range(ho):
                for x in range(wo):
                    best = -1
                    bi = -1
                    for a in range(k):
                        for b in range(k):
                            i = n * h * w + (y * k + a) * w + (x * k + b)
                            if best < 0 or tin[i] < best:
                                best = tin[i]
                                bi = i
                    o = n * ho * wo + y * wo + x
                    tout[o] = best
                    win[o] = tin_base + bi

    @njit
    def _group_by_time(t, n, t_max):  # pragma: no cover - compiled
        """Counting sort of the spiking entries (``t < t_max``) of ``t[:n]`` by time: ``order``
        lists their indices, ascending within a time, and ``order[ends[s − 1]:ends[s]]`` (with
        ``ends[−1] = 0``) is the group of time ``s``."""
        ends = np.zeros(t_max + 1, np.int64)
        for i in range(n):
            if t[i] < t_max:
                ends[t[i] + 1] += 1
        for s in range(t_max):
            ends[s + 1] += ends[s]
        order = np.empty(ends[t_max], np.int64)
        for i in range(n):
            s = t[i]
            if s < t_max:
                order[ends[s]] = i
                ends[s] += 1  # start of group s → its end
        return order, ends

    @njit
    def _fc_forward(tin, Wf, al, nin, nout, theta, strict, tau1, tau2, t_max, tout, A, used, R, F, V):  # pragma: no cover
        """Fully connected layer: weight rows summed per input time bin, then all neurons stepped."""
        tau = tau1 + tau2
        # inputs grouped by time bin (ascending index within a bin, so every A[s] is summed in the
        # same order as a plain loop over the inputs), four rows at a time
        order, cnt = _group_by_time(tin, nin, t_max)
        tfirst = t_max
        lo = 0
        for s in range(t_max):
            hi = cnt[s]  # end of bin s
            used[s] = 1 if hi > lo else 0
            if hi == lo:
                continue
            if s < tfirst:
                tfirst = s
            i0 = order[lo]
            row = Wf[i0 * nout:(i0 + 1) * nout]
            for j in range(nout):
                A[s, j] = row[j]
            r = lo + 1
            while r + 4 <= hi:
                i0, i1, i2, i3 = order[r], order[r + 1], order[r + 2], order[r + 3]
                r0 = Wf[i0 * nout:(i0 + 1) * nout]
                r1 = Wf[i1 * nout:(i1 + 1) * nout]
                r2 = Wf[i2 * nout:(i2 + 1) * nout]
                r3 = Wf[i3 * nout:(i3 + 1) * nout]
                for j in range(nout):
                    a = A[s, j]
                    a += r0[j]
                    a += r1[j]
                    a += r2[j]
                    a += r3[j]
                    A[s, j] = a
                r += 4
            while r < hi:
                i0 = order[r]
                row = Wf[i0 * nout:(i0 + 1) * nout]
                for j in range(nout):
                    A[s, j] += row[j]
                r += 1
            lo = hi
        for j in range(nout):
            tout[j] = t_max
            R[j] = 0.0
            F[j] = 0.0
            V[j] = 0.0
        alive = nout
        for t in range(tfirst, t_max - 1):
            # slope from t to t + 1: inputs at t start rising, at t − τ1 start falling, at t − τ end
            if used[t]:
                for j in range(nout):
                    R[j] += A[t, j]
            if t - tau1 >= 0 and used[t - tau1]:
                for j in range(nout):
                    R[j] -= A[t - tau1, j]
                    F[j] += A[t - tau1, j]
            if t - tau >= 0 and used[t - tau]:
                for j in range(nout):
                    F[j] -= A[t - tau, j]
            hit = False
            for j in range(nout):  # branch-free, vectorisable; fired neurons are ignored below
                V[j] += al * (R[j] / tau1 - F[j] / tau2)
                hit |= (V[j] > theta) if strict else (V[j] >= theta)
            if hit:
                for j in range(nout):
                    if tout[j] == t_max and ((V[j] > theta) if strict else (V[j] >= theta)):
                        tout[j] = t + 1
                        V[j] = -np.inf  # a neuron fires once: keep it out of the test above
                        alive -= 1
            if alive == 0:
                break

    @njit
    def forward_sample(x, lay, Wf, alpha, fp, ip, times, win, A, used, R, F, V, keys, taps, Wt, fired):  # pragma: no cover
        t_max = ip[_P_TMAX]
        tau1 = ip[_P_TAU1]
        tau2 = ip[_P_TAU2]
        strict = ip[_P_STRICT] != 0
        for i in range(x.shape[0]):
            times[i] = x[i]
        for l in range(lay.shape[0]):
            kind = lay[l, _K_KIND]
            nin = lay[l, _K_NIN]
            nout = lay[l, _K_NOUT]
            tin = times[lay[l, _K_TIN]:lay[l, _K_TIN] + nin]
            tout = times[lay[l, _K_TOUT]:lay[l, _K_TOUT] + nout]
            if kind == POOL:
                _pool_forward(tin, lay[l, _K_CIN], lay[l, _K_H], lay[l, _K_W], lay[l, _K_K], tout,
                              win[lay[l, _K_TOUT]:lay[l, _K_TOUT] + nout], lay[l, _K_TIN])
                continue
            li = lay[l, _K_LIDX]
            theta = fp[li, _F_THETA]
            woff = lay[l, _K_WOFF]
            if kind == CONV:
                cin = lay[l, _K_CIN]
                k = lay[l, _K_K]
                cout = lay[l, _K_COUT]
                _conv_forward(tin, Wf[woff:woff + cout * cin * k * k], alpha, lay[l, _K_AOFF], lay[l, _K_NA], cin,
                              lay[l, _K_H], lay[l, _K_W], cout, k, theta, strict, tau1, tau2, t_max, tout, keys, taps,
                              Wt, R, F, V, fired)
            else:
                _fc_forward(tin, Wf[woff:woff + nin * nout], alpha[lay[l, _K_AOFF]], nin, nout, theta, strict,
                            tau1, tau2, t_max, tout, A, used, R, F, V)

    @njit
    def _eps(s, tau1, tau2):  # pragma: no cover - compiled
        """Eq. 2 at an integer lag."""
        if s < 0:
            return 0.0
        if s < tau1:
            return s / tau1
        if s < tau1 + tau2:
            return (tau1 + tau2 - s) / tau2
        return 0.0

    @njit
    def _dv(wv, s, tau1, tau2):  # pragma: no cover - compiled
        """Eq. 13 at lag s = t_i − t_j."""
        if s < 0:
            return 0.0
        if s < tau1:
            return -wv / tau1
        if s < tau1 + tau2:
            return wv / tau2
        return 0.0

    @njit
    def backward_sample(label, lay, W, Wf, alpha, fp, ip, gamma, lrf, times, win, T, e, disp, cvec, dK, stats, tev):  # pragma: no cover
        """Targets, displacements, errors and updates of one sample (see the module docstring);
        ``lrf`` scales η and μ (the decay factor of the sample, 1.0 without decay).

        ``W`` is the real weight buffer (updated in place), ``Wf`` the forward weights (``W``
        itself, or sign(W) in binary mode, refreshed here for every changed weight)."""
        t_max = ip[_P_TMAX]
        tau1 = ip[_P_TAU1]
        tau2 = ip[_P_TAU2]
        norm = ip[_P_NORM]
        clip = ip[_P_CLAMP] != 0
        binary = ip[_P_BINARY] != 0
        disp_eff = ip[_P_DISP_EFF] != 0
        disp_silent = ip[_P_DISP_SILENT] != 0
        nl = lay.shape[0]
        # ---- output targets (§3.1.1) and error (Eq. 4)
        ob = lay[nl - 1, _K_TOUT]
        C = lay[nl - 1, _K_NOUT]
        to = times[ob:ob + C]
        Tq = T[ob:ob + C]
        nb_relative_targets(to, label, t_max, gamma, ip[_P_TRULE], ip[_P_CLAMP] != 0, Tq)
        eq = e[ob:ob + C]
        loss = 0.0
        for j in range(C):
            eq[j] = (Tq[j] - to[j]) / t_max
            loss += 0.5 * eq[j] * eq[j]
        stats[0] = loss
        stats[1], stats[2] = nb_strict_outcome(to, label, t_max)  # training stats: strict, silent
        gate = ip[_P_LEARN_ON]
        if gate == LEARN_WRONG and stats[1] == 1.0:
            for j in range(C):
                eq[j] = 0.0
        elif gate == LEARN_MARGIN and to[label] < t_max:
            # outputs already on the right side of the label by the margin λ keep their time
            mo = t_max + 0.0
            for j in range(C):
                if j != label:
                    if to[j] >= to[label] + gamma:
                        eq[j] = 0.0
                    mo = min(mo, float(to[j]))
            if to[label] + gamma <= mo:
                eq[label] = 0.0
        nb_normalise(eq, norm)
        for l in range(nl - 1, -1, -1):
            kind = lay[l, _K_KIND]
            nin = lay[l, _K_NIN]
            nout = lay[l, _K_NOUT]
            pb = lay[l, _K_TIN]
            qb = lay[l, _K_TOUT]
            tpre = times[pb:pb + nin]
            tpost = times[qb:qb + nout]
            if kind == POOL:
                # route each pool neuron's displacement to the conv neuron(s) below
                ec = e[pb:pb + nin]
                Tc = T[pb:pb + nin]
                for i in range(nin):
                    ec[i] = 0.0
                    Tc[i] = -1.0  # no target
                c = lay[l, _K_CIN]
                h = lay[l, _K_H]
                w = lay[l, _K_W]
                k = lay[l, _K_K]
                ho = h // k
                wo = w // k
                for p in range(nout):
                    dp = disp[qb + p]
                    if ip[_P_ROUTE] == 0:
                        i = win[qb + p] - pb
                        tg = tpre[i] + dp
                        if clip:
                            tg = min(max(tg, 0.0), float(t_max))
                        Tc[i] = tg
                        ec[i] = (tg - tpre[i]) / t_max
                    else:
                        n = p // (ho * wo)
                        r = p - n * ho * wo
                        y = r // wo
                        x = r - y * wo
                        for a in range(k):
                            for b in range(k):
                                i = n * h * w + (y * k + a) * w + (x * k + b)
                                if tpre[i] < t_max:
                                    tg = tpre[i] + dp
                                    if clip:
                                        tg = min(max(tg, 0.0), float(t_max))
                                    Tc[i] = tg
                                    ec[i] = (tg - tpre[i]) / t_max
                nb_normalise(ec, norm)
                continue
            li = lay[l, _K_LIDX]
            theta = fp[li, _F_THETA]
            lr = fp[li, _F_LR] * lrf
            beta = fp[li, _F_BETA]
            lra = fp[li, _F_LRA] * lrf
            woff = lay[l, _K_WOFF]
            aoff = lay[l, _K_AOFF]
            na = lay[l, _K_NA]
            eq = e[qb:qb + nout]
            cq = cvec[:nout]
            scale = float(t_max) * t_max if (kind == CONV and ip[_P_EQ15] != 0) else 1.0
            active = False
            for i in range(nout):
                cq[i] = eq[i] / t_max * tpost[i] / theta * scale  # Eqs. 7, 9 (Eq. 19 / Eq. 15 for conv)
                if cq[i] != 0.0:
                    active = True
            tv = tev[:nout]
            for i in range(nout):
                tv[i] = tpost[i]
                if ip[_P_PSP_TIME] == 1 or (ip[_P_PSP_TIME] == 2 and l == nl - 1):
                    Ti = T[qb + i]
                    if Ti >= 0.0 and Ti < tpost[i]:
                        tv[i] = int(math.floor(Ti))
            need_disp = l > 0
            dd = disp[pb:pb + nin]
            if need_disp:
                for j in range(nin):
                    dd[j] = 0.0
            if not active:
                # every term of Eqs. 10, 14, 19 and 24 carries c: a zero error moves nothing (the
                # weights, α and the displacements stay exactly as they are), so skip the rows
                # (learn_on="margin" zeroes the whole error of most samples once they are learnt)
                pass
            elif kind == FC:
                Wl = W[woff:woff + nin * nout]
                Fl = Wf[woff:woff + nin * nout]
                al = alpha[aoff]
                ga = 0.0
                tau = tau1 + tau2
                # lag tables over s = t_i − t_j in −t_max..t_max (index s + t_max): ε(s) (Eq. 2) and
                # the indicators of the two cases of Eq. 13; they make the row loop branch-free
                nt2 = 2 * t_max + 1
                epsX = cvec[nout:nout + nt2]
                riseX = cvec[nout + nt2:nout + 2 * nt2]
                fallX = cvec[nout + 2 * nt2:nout + 3 * nt2]
                for sl in range(nt2):
                    lag = sl - t_max
                    epsX[sl] = _eps(lag, tau1, tau2)
                    riseX[sl] = 1.0 if 0 <= lag < tau1 else 0.0
                    fallX[sl] = 1.0 if tau1 <= lag < tau else 0.0
                aq = cvec[nout + 3 * nt2:2 * nout + 3 * nt2]
                sil = cvec[2 * nout + 3 * nt2:3 * nout + 3 * nt2]
                ns = 0
                for i in range(nout):
                    aq[i] = -lr * cq[i]
                    if tv[i] >= t_max:
                        sil[ns] = i
                        ns += 1
                use_eff = binary and disp_eff
                if not binary:
                    # Spiking presynaptic rows grouped by their time (counting sort): the lag
                    # tables then fold into three vectors per time, shared by the whole group.
                    u = cvec[3 * nout + 3 * nt2:4 * nout + 3 * nt2]
                    v = cvec[4 * nout + 3 * nt2:5 * nout + 3 * nt2]
                    g = cvec[5 * nout + 3 * nt2:6 * nout + 3 * nt2]
                    order, cnt = _group_by_time(tpre, nin, t_max)
                    lo = 0
                    for s_ in range(t_max):
                        hi = cnt[s_]  # end of group s
                        if hi == lo:
                            continue
                        for i in range(nout):
                            x = tv[i] - s_ + t_max
                            u[i] = cq[i] * riseX[x]
                            v[i] = cq[i] * fallX[x]
                            g[i] = aq[i] * epsX[x]
                        r = lo
                        while r + 4 <= hi:
                            j0, j1, j2, j3 = order[r], order[r + 1], order[r + 2], order[r + 3]
                            a0, a1, a2, a3, f0, f1, f2, f3 = _fc_row4(
                                Wl[j0 * nout:(j0 + 1) * nout], Wl[j1 * nout:(j1 + 1) * nout],
                                Wl[j2 * nout:(j2 + 1) * nout], Wl[j3 * nout:(j3 + 1) * nout], u, v, g)
                            if need_disp:
                                dd[j0] = -beta * (-a0 / tau1 + f0 / tau2)
                                dd[j1] = -beta * (-a1 / tau1 + f1 / tau2)
                                dd[j2] = -beta * (-a2 / tau1 + f2 / tau2)
                                dd[j3] = -beta * (-a3 / tau1 + f3 / tau2)
                            r += 4
                        while r < hi:
                            j = order[r]
                            ar, af = _fc_row(Wl[j * nout:(j + 1) * nout], u, v, g)
                            if need_disp:
                                dd[j] = -beta * (-ar / tau1 + af / tau2)
                            r += 1
                        lo = hi
                    if need_disp and ns > 0 and disp_silent:
                        # silent presynaptic rows meet only silent postsynaptic neurons (lag 0 of
                        # Eq. 13, rising case): a dense masked row sum, no update (ε(0) = 0)
                        for i in range(nout):
                            u[i] = cq[i] if tv[i] >= t_max else 0.0
                        for j in range(nin):
                            if tpre[j] >= t_max:
                                ar = _row_dot(Wl[j * nout:(j + 1) * nout], u)
                                dd[j] = -beta * (-ar / tau1)
                else:  # binary: Eq. 10 on the real W, sign(W) refreshed, Eqs. 24-25 for α
                    for j in range(nin):
                        tj = tpre[j]
                        row = Wl[j * nout:(j + 1) * nout]
                        frow = Fl[j * nout:(j + 1) * nout]
                        ar = 0.0  # Σ c_i w_ij over the rising lags, Eq. 13 first case
                        af = 0.0  # and over the falling lags, second case
                        if tj >= t_max:
                            # a silent presynaptic neuron meets only silent postsynaptic ones (lag 0)
                            if need_disp and ns > 0 and disp_silent:
                                for r in range(ns):
                                    i = int(sil[r])
                                    wv = al * frow[i] if use_eff else row[i]
                                    ar += cq[i] * wv
                                dd[j] = -beta * (-ar / tau1 + af / tau2)
                            continue
                        for i in range(nout):
                            s = tv[i] - tj
                            if s < 0:
                                continue
                            wv = al * frow[i] if use_eff else row[i]
                            if s < tau1:
                                ar += cq[i] * wv
                            elif s < tau:
                                af += cq[i] * wv
                            ep = epsX[s + t_max]
                            if ep != 0.0:
                                ga += cq[i] * frow[i] * ep  # Eqs. 24-25, with the pre-update sign
                                row[i] += aq[i] * ep  # Eq. 10 on the real weight
                                frow[i] = 1.0 if row[i] >= 0 else -1.0
                        if need_disp:
                            dd[j] = -beta * (-ar / tau1 + af / tau2)
                if binary:
                    alpha[aoff] += -lra * ga
            else:  # conv: Eqs. 16-21 summed over the positions of each map
                cin = lay[l, _K_CIN]
                h = lay[l, _K_H]
                w = lay[l, _K_W]
                k = lay[l, _K_K]
                cout = lay[l, _K_COUT]
                ho = h - k + 1
                wo = w - k + 1
                kk = k * k
                nk = cout * cin * kk
                Wl = W[woff:woff + nk]
                Fl = Wf[woff:woff + nk]
                dKl = dK[:nk]
                for q in range(nk):
                    dKl[q] = 0.0
                gal = dK[nk:nk + cout]
                for q in range(cout):
                    gal[q] = 0.0
                # ε (Eq. 2) over the lags −t_max..t_max: a table lookup instead of branches (ε = 0
                # for negative lags, Eq. 6, so adding its term changes nothing)
                nt2 = 2 * t_max + 1
                epsC = cvec[nout:nout + nt2]
                for sl in range(nt2):
                    epsC[sl] = _eps(sl - t_max, tau1, tau2)
                for d in range(cout):
                    al = alpha[aoff + (d if na > 1 else 0)]
                    for y in range(ho):
                        for x in range(wo):
                            i = d * ho * wo + y * wo + x
                            ci = cq[i]
                            if ci == 0.0:
                                continue
                            ti = tv[i]
                            mi = -lr * ci
                            for n in range(cin):
                                for a in range(k):
                                    for b in range(k):
                                        j = n * h * w + (y + a) * w + (x + b)
                                        s = ti - tpre[j]
                                        q = d * cin * kk + n * kk + a * k + b
                                        ep = epsC[s + t_max]
                                        dKl[q] += mi * ep
                                        if binary:
                                            gal[d if na > 1 else 0] += ci * Fl[q] * ep
                                        if need_disp and s >= 0 and (disp_silent or tpre[j] < t_max):
                                            wv = al * Fl[q] if (binary and disp_eff) else Wl[q]
                                            dd[j] += -beta * ci * _dv(wv, s, tau1, tau2)
                for q in range(nk):
                    Wl[q] += dKl[q]
                    if binary:
                        Fl[q] = 1.0 if Wl[q] >= 0 else -1.0
                if binary:
                    for m in range(na):
                        alpha[aoff + m] += -lra * gal[m]
            # targets and errors of the layer below (a pool layer routes them further down)
            if need_disp and lay[l - 1, _K_KIND] != POOL:
                Tb = T[pb:pb + nin]
                eb = e[pb:pb + nin]
                for j in range(nin):
                    tg = tpre[j] + dd[j]
                    if clip:
                        tg = min(max(tg, 0.0), float(t_max))
                    Tb[j] = tg
                    eb[j] = (tg - tpre[j]) / t_max
                nb_normalise(eb, norm)

    @njit
    def _scratch(nmax, tmaxc, kmax):  # pragma: no cover - compiled
        """Work buffers of :func:`forward_sample`."""
        return (np.empty((tmaxc, nmax), np.float64), np.zeros(tmaxc, np.int64), np.empty(nmax, np.float64),
                np.empty(nmax, np.float64), np.empty(nmax, np.float64), np.empty(kmax, np.int64),
                np.empty(kmax, np.int64), np.empty((kmax, nmax), np.float64), np.empty(nmax, np.int64))

    @njit
    def learn_batch(x, y, lay, W, Wf, alpha, fp, ip, gamma, lrf, fire_count, n_in, out_times, out_win, out_T, out_e,
                    out_disp, out_stats, nmax, tmaxc, kmax):  # pragma: no cover - compiled
        """Per-sample training over the rows of ``x`` (each sample updates the weights before the
        next one is seen, exactly as B calls with one sample each)."""
        t_max = ip[_P_TMAX]
        A, used, R, F, V, keys, taps, Wt, fired = _scratch(nmax, tmaxc, kmax)
        cvec = np.empty(6 * out_times.shape[1] + 6 * t_max + 3, np.float64)
        dK = np.empty(W.shape[0] + alpha.shape[0] + 1024, np.float64)
        tev = np.empty(out_times.shape[1], np.int64)
        for b in range(x.shape[0]):
            times = out_times[b]
            forward_sample(x[b], lay, Wf, alpha, fp, ip, times, out_win[b], A, used, R, F, V, keys, taps, Wt, fired)
            for q in range(n_in, times.shape[0]):
                if times[q] < t_max:
                    fire_count[q - n_in] += 1
            backward_sample(y[b], lay, W, Wf, alpha, fp, ip, gamma, lrf[b], times, out_win[b], out_T[b], out_e[b],
                            out_disp[b], cvec, dK, out_stats[b], tev)

    @njit
    def predict_range(x, lo, hi, lay, Wf, alpha, fp, ip, out_times, out_win, nmax, tmaxc, kmax):  # pragma: no cover
        A, used, R, F, V, keys, taps, Wt, fired = _scratch(nmax, tmaxc, kmax)
        for b in range(lo, hi):
            forward_sample(x[b], lay, Wf, alpha, fp, ip, out_times[b], out_win[b], A, used, R, F, V, keys, taps, Wt, fired)
