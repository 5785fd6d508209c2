"""A literal, slow, loop-based reference of S4NN (Kheradpisheh & Masquelier 2020), one sample at a
time, equation by equation, in plain Python floats (float64). It is the specification the fast
implementation in ``snnlearn.rules.s4nn`` is tested against; it shares no code with it.

Weights are nested lists ``W[l][i][j]`` (presynaptic ``i`` of layer ``l``, postsynaptic ``j`` of layer
``l + 1``). ``params`` holds the hyperparameters of ``S4NN.default_hparams`` (the same names).
"""

from __future__ import annotations

import copy
import math


class ReferenceS4NN:
    def __init__(self, weights, params):
        self.W = [[list(map(float, row)) for row in layer] for layer in weights]
        self.L = len(self.W)
        p = params
        self.t_max = int(p["t_max"])
        th = p["threshold"]
        self.theta = [float(v) for v in th] if isinstance(th, (list, tuple)) else [float(th)] * self.L
        lr = p["lr"]
        self.lr = [float(v) for v in lr] if isinstance(lr, (list, tuple)) else [float(lr)] * self.L
        self.gamma = float(p["gamma"])
        self.lam = float(p["weight_decay"])
        self.decay_mode = p["weight_decay_mode"]
        self.strict = p["threshold_test"] == ">"
        self.delay = int(p["per_layer_delay"])
        self.norm = p["normalisation"]
        self.update_silent = bool(p["update_silent"])
        self.hidden_from = p["hidden_delta_from"]
        self.clamp = bool(p["target_clamp"])
        self.dead_fraction = float(p["dead_neuron_fraction"])
        self.dead_layers = p["dead_neuron_layers"]
        self.fire_count = [[0] * len(self.W[l][0]) for l in range(self.L)]
        self.n_seen = 0

    # ---------------------------------------------------------------- Eqs. 3-4
    def forward(self, x):
        """x: list of input spike times (Eq. 1). Returns the firing times of every layer."""
        t_max = self.t_max
        times = [list(x)]
        for l in range(self.L):
            W = self.W[l]
            t_in = times[-1]
            n_out = len(W[0])
            V = [0.0] * n_out
            t_out = [t_max] * n_out  # fake spike at t_max for neurons that never fire
            done = [False] * n_out
            for s in range(0, t_max + 1):  # every time step of the simulation
                for i in range(len(t_in)):  # Eq. 3: the potential changes when an input spikes
                    if t_in[i] == s:
                        for j in range(n_out):
                            V[j] += W[i][j]
                for j in range(n_out):  # Eq. 4: first crossing, one spike at most
                    if done[j]:
                        continue
                    crossed = V[j] > self.theta[l] if self.strict else V[j] >= self.theta[l]
                    if crossed:
                        done[j] = True
                        t_out[j] = min(s + self.delay, t_max)
            times.append(t_out)
        return times

    # ---------------------------------------------------------------- Eqs. 17-18
    def targets(self, t_out, label):
        t_max, gamma = self.t_max, self.gamma
        tau = min(t_out)
        if tau == t_max:  # Eq. 18: every output is silent
            T = [float(t_max)] * len(t_out)
            T[label] = t_max - gamma
            return T
        T = []
        for j, t in enumerate(t_out):  # Eq. 17
            if t < tau + gamma:
                T.append(min(tau + gamma, t_max) if self.clamp else tau + gamma)
            else:
                T.append(float(t))
        T[label] = float(tau)
        return T

    # ---------------------------------------------------------------- Eq. 16
    def normalise(self, g):
        if self.norm == "none":
            return list(g)
        s = 0.0
        if self.norm == "l2":
            for v in g:
                s += v * v
            s = math.sqrt(s)
        elif self.norm == "sum_abs":
            for v in g:
                s += abs(v)
        elif self.norm == "sum":  # literal δ/Σδ with δ = −g
            for v in g:
                s += -v
        if s == 0.0:
            return list(g)
        return [v / s for v in g]

    def causal(self, t_pre, t_post):
        """Eqs. 8 and 15: the presynaptic spike arrived before (or, without delay, at) the
        postsynaptic crossing; a spike at t_max is never causal."""
        return t_pre < self.t_max and t_pre + self.delay <= t_post

    def decay_factor(self, l):
        factor = 2.0 if self.decay_mode == "loss" else 1.0
        return 1.0 - factor * self.lr[l] * self.lam

    def hidden_g(self, l, g_post, t_pre, t_post):
        """Eq. 15 for the presynaptic layer of weight layer l, with the current self.W[l]."""
        W = self.W[l]
        out = []
        for i in range(len(W)):
            acc = 0.0
            for j in range(len(W[0])):
                if self.causal(t_pre[i], t_post[j]):
                    acc += g_post[j] * W[i][j]
            out.append(acc)
        return out

    # ---------------------------------------------------------------- one SGD step
    def step(self, x, label):
        """One per-sample step (forward, targets, errors, deltas, updates). Returns the
        internals: times, T, g (normalised, per weight layer) and the loss."""
        t_max = self.t_max
        times = self.forward(x)
        self.n_seen += 1
        for l in range(self.L):
            for j, t in enumerate(times[l + 1]):
                if t < t_max:
                    self.fire_count[l][j] += 1
        t_out = times[-1]
        T = self.targets(t_out, label)
        e = [(T[j] - t_out[j]) / t_max for j in range(len(t_out))]  # Eq. 9
        loss = 0.0
        for v in e:
            loss += 0.5 * v * v  # Eq. 10
        g = self.normalise(e)  # g = −δ (Eq. 14), normalised (Eq. 16)
        gs = [None] * self.L
        for l in range(self.L - 1, -1, -1):
            gs[l] = g
            t_pre, t_post = times[l], times[l + 1]
            g_prev = None
            if l > 0 and self.hidden_from == "original":
                g_prev = self.hidden_g(l, g, t_pre, t_post)
            c = self.decay_factor(l)
            W = self.W[l]
            for i in range(len(W)):
                for j in range(len(W[0])):
                    gate = self.update_silent or t_post[j] < t_max  # Eq. 13: 0 for silent neurons
                    if gate and self.causal(t_pre[i], t_post[j]):
                        delta_w = -(self.lr[l] * g[j])  # Eqs. 11 and 13
                    else:
                        delta_w = 0.0
                    if self.decay_mode == "loss":  # λΣw² in the loss: gradient 2λw, same step
                        W[i][j] = W[i][j] * c + delta_w
                    else:  # the code: update, then W −= ηλW
                        W[i][j] = (W[i][j] + delta_w) * c
            if l > 0 and self.hidden_from == "updated":
                g_prev = self.hidden_g(l, g, t_pre, t_post)
            if l > 0:
                g = self.normalise(g_prev)
        return {"times": times, "T": T, "g": gs, "loss": loss}

    def batch_step(self, xs, labels):
        """Mini-batch: every sample's step from the same frozen weights; the resulting weights are
        averaged. Returns the per-sample internals."""
        W0 = copy.deepcopy(self.W)
        results = []
        news = []
        for x, y in zip(xs, labels):
            self.W = copy.deepcopy(W0)
            results.append(self.step(x, y))
            news.append(self.W)
        B = len(news)
        self.W = [
            [[sum(news[b][l][i][j] for b in range(B)) / B for j in range(len(W0[l][0]))] for i in range(len(W0[l]))]
            for l in range(self.L)
        ]
        return results

    # ---------------------------------------------------------------- §2.6 dead neurons
    def dead_neurons(self):
        """Per weight layer, the indices of the neurons that count as dead at the end of an epoch."""
        out = []
        for l in range(self.L):
            checked = self.dead_layers == "all" or (self.dead_layers == "hidden" and l < self.L - 1)
            if not checked:
                out.append([])
                continue
            limit = self.dead_fraction * self.n_seen
            out.append([j for j, c in enumerate(self.fire_count[l]) if c < limit or c == 0])
        return out
