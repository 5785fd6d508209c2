import numpy as np
import pytest
import torch

from snnlearn.encoding import bin_events, direct_current, if_rate_spikes, poisson_spikes, time_to_first_spike


def test_ttfs_floor_matches_authors_formula():
    i = torch.arange(256, dtype=torch.uint8)
    t = time_to_first_spike(i, t_max=256, rounding="floor")
    expected = [int(np.floor((255 - v) * 256 / 255)) for v in range(256)]
    assert t.tolist() == expected
    assert t[255] == 0 and t[0] == 256  # white fires first, black at t_max


def test_ttfs_round_is_eq1():
    i = torch.arange(256)
    t = time_to_first_spike(i, t_max=100, rounding="round")
    expected = [int(np.floor((255 - v) * 100 / 255 + 0.5)) for v in range(256)]
    assert t.tolist() == expected


def test_ttfs_rejects_bad_input():
    with pytest.raises(ValueError):
        time_to_first_spike(torch.tensor([300]))
    with pytest.raises(ValueError):
        time_to_first_spike(torch.tensor([0.5]))
    with pytest.raises(ValueError):
        time_to_first_spike(torch.tensor([1]), rounding="ceil")


def test_if_rate_counts_and_timing():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    s = if_rate_spikes(x, 8)
    assert s.shape == (8, 1, 4)
    assert s.sum(0).tolist() == [[0.0, 2.0, 4.0, 8.0]]
    assert s[:, 0, 1].tolist() == [0, 0, 0, 1, 0, 0, 0, 1]  # v reaches 1 at the 4th step


def test_poisson_rate_and_seed():
    x = torch.full((1, 1000), 0.3)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = poisson_spikes(x, 50, g1), poisson_spikes(x, 50, g2)
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 0.3) < 0.01
    assert poisson_spikes(torch.zeros(1, 10), 5).sum() == 0


def test_direct_current_normalises_and_repeats():
    x = torch.tensor([[0.5, 1.0]])
    z = direct_current(x, 3, mean=0.5, std=0.5)
    assert z.shape == (3, 1, 2) and torch.equal(z[2], torch.tensor([[0.0, 1.0]]))


def test_bin_events():
    x = np.array([0, 1, 1, 33, 5])
    y = np.array([0, 2, 2, 33, 5])
    p = np.array([0, 1, 1, 0, 1])
    t = np.array([0, 2999, 2500, 3000, 9000])
    f = bin_events(x, y, p, t, frame_us=3000, n_frames=3)
    assert f.shape == (3, 2, 34, 34) and f.dtype == np.uint8
    assert f[0, 0, 0, 0] == 1 and f[0, 1, 2, 1] == 2 and f[1, 0, 33, 33] == 1
    assert f.sum() == 4  # the event at 9 ms falls past 3 frames
