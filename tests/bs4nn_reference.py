"""A literal, slow, loop-based reference of BS4NN as the authors coded it (SRKH/BS4NN,
``BS4NN_mnist.ipynb``, commit 69128a8: ``Forward_FC``, ``target_function``, ``backward_FC`` and the
training loop), one sample at a time, in plain Python floats. The fast implementation in
``snnlearn.rules.bs4nn`` is tested against it; it shares no code with it.

Weights are nested lists ``W[l][i][k]`` (presynaptic ``i``, postsynaptic ``k``; the notebook stores
the transpose). ``alpha[l]`` is the notebook's ``fact[layer]``. ``params`` holds the hyperparameters
of ``BS4NN.default_hparams`` (the same names). Generalised from the notebook's one hidden layer to
any depth by repeating its hidden-layer step.
"""

from __future__ import annotations

import copy
import math


def sign(w, zero=0.0):
    """np.sign, with a configurable value at 0."""
    if w > 0:
        return 1.0
    if w < 0:
        return -1.0
    return zero


class ReferenceBS4NN:
    def __init__(self, weights, alpha, params):
        self.W = [[list(map(float, row)) for row in layer] for layer in weights]
        self.alpha = [float(a) for a in alpha]
        self.L = len(self.W)
        p = params
        self.t_max = int(p["t_max"])  # Tmax
        self.t_end = int(p["input_t_end"])  # Tend
        th = p["threshold"]
        self.thr = [float(v) for v in th] if isinstance(th, (list, tuple)) else [float(th)] * self.L
        lr = p["lr"]
        self.lr = [float(v) for v in lr] if isinstance(lr, (list, tuple)) else [float(lr)] * self.L
        mu = p["alpha_lr"]
        self.lrF = [float(v) for v in mu] if isinstance(mu, (list, tuple)) else [float(mu)] * self.L
        lam = p["weight_decay"]
        self.lamda = [float(lam)] * self.L
        self.gamma = float(p["gamma"])
        self.zero = float(p["sign_zero"])
        self.silent_target = p.get("silent_target", "none")  # not in the notebook: "label" = S4NN Eq. 18

    # ---------------------------------------------------------------- data preparation (cell 2)
    def encode(self, pixels):
        return [math.floor(self.t_end - (p * self.t_end) / 255) for p in pixels]

    # ---------------------------------------------------------------- Forward_FC
    def forward(self, x):
        t_max = self.t_max
        times = [list(x)]
        for l in range(self.L):
            W = self.W[l]
            t_in = times[-1]
            n_out = len(W[0])
            thre = self.thr[l] / self.alpha[l]
            t_out = []
            for k in range(n_out):
                # Voltage = cumsum over the slots 0..Tmax of Σ_i sign(w_ik)·[t_i == slot]
                V = []
                acc = 0.0
                for s in range(t_max + 1):
                    for i in range(len(t_in)):
                        if t_in[i] == s:
                            acc += sign(W[i][k], self.zero)
                    V.append(acc)
                V[t_max] = thre + 1  # Voltage[:, Tmax] = thre + 1: the fake spike
                first = next(s for s in range(t_max + 1) if V[s] > thre)  # argmax(Voltage > thre)
                t_out.append(min(first + 1, t_max))  # +1, then ST[ST > Tmax] = Tmax
            times.append(t_out)
        return times

    def potential(self, t_hidden, slot):
        """VoltageO[:, slot] of the output layer (the all-silent fallback uses slot Tmax − 3)."""
        W = self.W[-1]
        return [sum(sign(W[i][k], self.zero) for i in range(len(W)) if t_hidden[i] <= slot) for k in range(len(W[0]))]

    def tiebreak_decision(self, times):
        """The ``potential_tiebreak`` readout (not in the notebook): among the outputs that fire
        first, the one with the largest potential at the slot where they crossed (firing time − 1,
        the notebook's +1) wins. Returns the class, or None when all outputs are silent or the
        largest potential is shared."""
        t_out = times[-1]
        tau = min(t_out)
        if tau == self.t_max:
            return None
        first = [k for k, t in enumerate(t_out) if t == tau]
        if len(first) == 1:
            return first[0]
        V = self.potential(times[-2], tau - 1)
        best = max(V[k] for k in first)
        winners = [k for k in first if V[k] == best]
        return winners[0] if len(winners) == 1 else None

    # ---------------------------------------------------------------- target_function
    def targets(self, t_out, label):
        t_max, gamma = self.t_max, self.gamma
        minFiring = min(t_out)
        if minFiring == t_max:
            T = [float(minFiring)] * len(t_out)  # label included: no learning
            if self.silent_target == "label":  # S4NN Eq. 18 instead
                T[label] = float(t_max - gamma)
            return T
        T = [float(t) for t in t_out]
        for j, t in enumerate(t_out):
            if (t - minFiring) < gamma:
                T[j] = min(minFiring + gamma, t_max)
        T[label] = float(minFiring)
        return T

    @staticmethod
    def l2_normalise(d):
        norm = math.sqrt(sum(v * v for v in d))
        return [v / norm for v in d] if norm != 0 else list(d)

    # ---------------------------------------------------------------- backward_FC
    def backward_fc(self, l, delta, t_in, t_out):
        W = self.W[l]
        n_in, n_out = len(W), len(W[0])
        HF = [[t_in[i] < t_out[k] for k in range(n_out)] for i in range(n_in)]
        for i in range(n_in):
            for k in range(n_out):
                W[i][k] -= (self.lr[l] * delta[k]) * HF[i][k]  # weight -= (lr*delta)*HF
        for i in range(n_in):
            for k in range(n_out):
                W[i][k] -= self.lr[l] * self.lamda[l] * W[i][k]  # weight -= lr*lamda*weight
        total = 0.0  # fact -= (lrF*delta*HF*sign(weight)).mean(), with the updated weight
        for i in range(n_in):
            for k in range(n_out):
                total += self.lrF[l] * delta[k] * HF[i][k] * sign(W[i][k], self.zero)
        self.alpha[l] -= total / (n_in * n_out)
        # Delta = sum((weight*delta)*HF, 0): through the updated real-valued weights
        return [sum(W[i][k] * delta[k] * HF[i][k] for k in range(n_out)) for i in range(n_in)]

    # ---------------------------------------------------------------- one training iteration
    def step(self, x, label):
        t_max = self.t_max
        times = self.forward(x)
        t_out = times[-1]
        T = self.targets(t_out, label)
        delta = self.l2_normalise([(T[k] - t_out[k]) / t_max for k in range(len(t_out))])
        gs = [None] * self.L
        for l in range(self.L - 1, -1, -1):
            gs[l] = delta
            below = self.backward_fc(l, delta, times[l], times[l + 1])
            if l > 0:
                delta = self.l2_normalise(below)
        return {"times": times, "T": T, "g": gs}

    def epoch(self, xs, labels, indices):
        """The notebook's epoch: one step per drawn index (IMGs = randint(0, N, N))."""
        return [self.step(xs[i], labels[i]) for i in indices]

    def batch_step(self, xs, labels):
        """Mini-batch (not in the notebook; the rule's ``batch_mode: mean``): every sample's step
        from the same frozen weights and scaling factors, then both averaged."""
        W0, a0 = copy.deepcopy(self.W), list(self.alpha)
        news, alphas, results = [], [], []
        for x, y in zip(xs, labels):
            self.W, self.alpha = copy.deepcopy(W0), list(a0)
            results.append(self.step(x, y))
            news.append(self.W)
            alphas.append(self.alpha)
        B = len(news)
        self.W = [
            [[sum(news[b][l][i][k] for b in range(B)) / B for k in range(len(W0[l][0]))] for i in range(len(W0[l]))]
            for l in range(self.L)
        ]
        self.alpha = [sum(a[l] for a in alphas) / B for l in range(self.L)]
        return results
