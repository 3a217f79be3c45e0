"""Time-model math against closed forms and independent implementations (scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from thrnn import time_model as tm

torch.set_num_threads(1)

A = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.5], dtype=torch.float64)


def test_model_axis_round_trip_and_values():
    hours = torch.tensor([0.0, 1.0, 24.0, 100.0, 500.0], dtype=torch.float64)
    u = tm.to_model_time(hours, gap_exponent=0.5, unit_hours=24.0)
    torch.testing.assert_close(u, (hours / 24.0).sqrt())
    torch.testing.assert_close(tm.from_model_time(u, gap_exponent=0.5, unit_hours=24.0), hours)
    with pytest.raises(ValueError, match="gap_exponent"):
        tm.to_model_time(hours, gap_exponent=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        tm.to_model_time(torch.tensor([-1.0]))


@pytest.mark.parametrize("w", [0.0, 1e-12, -1e-9, 1e-8])
def test_w_to_zero_is_the_exponential_law(w):
    u = torch.tensor([0.0, 0.3, 1.0, 4.0, 10.0], dtype=torch.float64)
    a = torch.tensor(0.4, dtype=torch.float64)
    rate = math.exp(0.4)
    expected_nll = -stats.expon(scale=1 / rate).logpdf(u.numpy())
    np.testing.assert_allclose(tm.nll(a, torch.tensor(w, dtype=torch.float64), u).numpy(), expected_nll, rtol=1e-4)
    np.testing.assert_allclose(
        tm.survival(a, torch.tensor(w, dtype=torch.float64), u).numpy(), np.exp(-rate * u.numpy()), rtol=1e-4
    )


@pytest.mark.parametrize("w", [0.05, 0.8, 3.0])
def test_positive_w_is_gompertz(w):
    # y = w u is Gompertz with shape c = e^a / w (scipy's parametrisation), so u has scale 1/w.
    u = np.array([0.0, 0.1, 0.5, 2.0, 5.0])
    for a in (-1.0, 0.3):
        law = stats.gompertz(c=math.exp(a) / w, scale=1 / w)
        at = torch.tensor(a, dtype=torch.float64)
        wt = torch.tensor(w, dtype=torch.float64)
        np.testing.assert_allclose(tm.nll(at, wt, torch.tensor(u)).numpy(), -law.logpdf(u), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(tm.survival(at, wt, torch.tensor(u)).numpy(), law.sf(u), rtol=1e-9)


@pytest.mark.parametrize("w", [-0.4, -1e-4, 0.0, 0.3])
def test_survival_is_one_minus_integral_of_density(w):
    a, wt = torch.tensor(0.2, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
    for upper in (0.5, 2.0, 7.0):
        mass, _ = integrate.quad(lambda x: float(tm.density(a, wt, torch.tensor(x, dtype=torch.float64))), 0, upper)
        s = float(tm.survival(a, wt, torch.tensor(upper, dtype=torch.float64)))
        assert s == pytest.approx(1 - mass, abs=1e-9)


def test_defective_mass_when_w_negative():
    w = torch.tensor(-0.5, dtype=torch.float64)
    p = tm.no_return_probability(A, w)
    torch.testing.assert_close(p, torch.exp(torch.exp(A) / -0.5))
    # the survival function tends to the no-return mass, and it is 0 for w >= 0
    torch.testing.assert_close(tm.survival(A, w, torch.tensor(200.0, dtype=torch.float64)), p)
    assert torch.all(tm.no_return_probability(A, torch.tensor(0.0, dtype=torch.float64)) == 0)
    assert torch.all(tm.no_return_probability(A, torch.tensor(0.2, dtype=torch.float64)) == 0)


def test_gradcheck_double_precision():
    u = torch.tensor([0.0, 0.2, 1.0, 3.0, 6.0], dtype=torch.float64)
    for w0 in (-0.3, -1e-3, 0.0, 1e-7, 0.4):
        a = torch.tensor([-1.0, 0.0, 0.5, 1.0, 0.2], dtype=torch.float64, requires_grad=True)
        w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a_, w_: tm.nll(a_, w_, u), (a, w))
        assert torch.autograd.gradcheck(lambda a_, w_: tm.survival(a_, w_, u), (a, w))


def test_float32_gradients_finite_and_close_to_double_near_w_zero():
    u = torch.linspace(0, 20, 50)
    for w0 in (0.0, 1e-6, -3e-3, 2e-2):
        grads = []
        for dtype in (torch.float32, torch.float64):
            a = torch.zeros(50, dtype=dtype, requires_grad=True)
            w = torch.tensor(w0, dtype=dtype, requires_grad=True)
            tm.nll(a - 1, w, u.to(dtype)).sum().backward()
            assert torch.isfinite(w.grad) and torch.isfinite(a.grad).all()
            grads.append(float(w.grad))
        assert grads[0] == pytest.approx(grads[1], rel=1e-3)


def test_median_closed_form_matches_survival_and_cutoff():
    w = torch.tensor(-0.1, dtype=torch.float64)
    med = tm.median_return_hours(A, w, cutoff_hours=1e6)
    s = tm.survival(A, w, med)
    torch.testing.assert_close(s, torch.full_like(s, 0.5))
    # exponential law: median log 2 / λ; back-transform with exponent 0.5 and unit 24 h
    a = torch.tensor([0.0, 1.0], dtype=torch.float64)
    med = tm.median_return_hours(a, torch.tensor(0.0), gap_exponent=0.5, unit_hours=24.0, cutoff_hours=1e6)
    torch.testing.assert_close(med, 24.0 * (math.log(2) / torch.exp(a)) ** 2)
    # no-return mass >= 0.5 -> cut-off; a finite median above the cut-off is capped
    w = torch.tensor(-2.0, dtype=torch.float64)
    a = torch.tensor([-3.0, math.log(2 * math.log(2)), 3.0], dtype=torch.float64)
    assert tm.no_return_probability(a, w)[0] > 0.5
    med = tm.median_return_hours(a, w, cutoff_hours=600.0)
    assert med[0] == 600.0 and med[1] == 600.0 and med[2] < 1
    assert float(tm.median_return_hours(torch.tensor(-9.0), 0.0, cutoff_hours=600.0)) == 600.0


def test_expected_return_exponential_closed_form():
    # E[T | T <= C] for an exponential law with rate λ: 1/λ - C e^{-λC} / (1 - e^{-λC})
    cutoff = 600.0
    a = torch.tensor([-6.0, -4.0, -2.0, 0.0, 2.0], dtype=torch.float64)
    mean, tail = tm.expected_return_hours(a, 0.0, cutoff_hours=cutoff)
    lam = torch.exp(a)
    expected = 1 / lam - cutoff * torch.exp(-lam * cutoff) / (-torch.expm1(-lam * cutoff))
    torch.testing.assert_close(mean, expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(tail, torch.exp(-lam * cutoff))


def test_expected_return_back_transform_and_gompertz_mean():
    # U = (T / 24)^0.5 exponential with rate λ: E[T] = 24 · 2 / λ² (cut-off far away)
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    mean, tail = tm.expected_return_hours(a, 0.0, gap_exponent=0.5, unit_hours=24.0, cutoff_hours=2000.0)
    torch.testing.assert_close(mean, 48.0 / torch.exp(a) ** 2, rtol=1e-4, atol=0)
    torch.testing.assert_close(tail, torch.exp(-torch.exp(a) * math.sqrt(2000.0 / 24.0)))
    # w > 0: Gompertz mean from scipy
    w = 0.05
    mean, _ = tm.expected_return_hours(torch.tensor([-3.0]), w, cutoff_hours=600.0)
    assert float(mean) == pytest.approx(stats.gompertz(c=math.exp(-3.0) / w, scale=1 / w).mean(), rel=1e-4)


def test_expected_return_defective_conditions_on_return():
    a, w = torch.tensor([-3.0], dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    mean, tail = tm.expected_return_hours(a, w, cutoff_hours=700.0)
    p_never = float(tm.no_return_probability(a, w))
    assert float(tail) == pytest.approx(p_never, rel=1e-9)
    # independent: quad of t f(t) over [0, C] divided by the mass in [0, C]
    num, _ = integrate.quad(lambda t: t * float(tm.density(a, w, torch.tensor(t))[0]), 0, 50, limit=200)
    assert float(mean) == pytest.approx(num / (1 - p_never), rel=1e-4)


@pytest.mark.parametrize("gap_exponent", [1.0, 0.5, 2.0])
def test_grid_refinement_changes_mae_by_less_than_a_tenth_of_a_percent(gap_exponent):
    gen = torch.Generator().manual_seed(0)
    a = torch.empty(200, dtype=torch.float64).uniform_(-5, 3, generator=gen)
    true_hours = torch.empty(200, dtype=torch.float64).uniform_(0, 500, generator=gen)
    ws = (-0.3, 0.0, 0.2, 2.0)
    maes = []
    for n_grid in (tm.DEFAULT_N_GRID, 8 * tm.DEFAULT_N_GRID):
        for w in ws:
            mean, _ = tm.expected_return_hours(
                a, w, gap_exponent=gap_exponent, unit_hours=24.0, cutoff_hours=600.0, n_grid=n_grid
            )
            maes.append(float((mean.clamp(max=500) - true_hours).abs().mean()))
    coarse, fine = maes[: len(ws)], maes[len(ws) :]
    for c, f in zip(coarse, fine, strict=True):
        assert abs(c - f) / f < 1e-3


def test_grid_refinement_per_prediction_over_a_wide_range():
    # each prediction, from a mean of ~1e-4 h (a = 6, exponent 0.5) to the cut-off, within 0.1 %
    a = torch.linspace(-8, 6, 57, dtype=torch.float64)
    for gap_exponent in (0.5, 1.0, 2.0):
        for w in (-0.3, 0.0, 2.0):
            kw = {"gap_exponent": gap_exponent, "unit_hours": 24.0, "cutoff_hours": 600.0}
            coarse, _ = tm.expected_return_hours(a, w, **kw)
            fine, _ = tm.expected_return_hours(a, w, n_grid=16 * tm.DEFAULT_N_GRID, **kw)
            assert float(((coarse - fine).abs() / fine).max()) < 1e-3


def test_return_probability_conditions_on_elapsed_time():
    a = torch.tensor([0.5, -1.0], dtype=torch.float64)
    # memoryless when w = 0 and gap_exponent = 1
    p0 = tm.return_probability(a, 0.0, elapsed_hours=0.0, horizon_hours=3.0)
    p5 = tm.return_probability(a, 0.0, elapsed_hours=5.0, horizon_hours=3.0)
    torch.testing.assert_close(p0, 1 - torch.exp(-3 * torch.exp(a)))
    torch.testing.assert_close(p5, p0)
    # general case equals 1 - S(e + h) / S(e) on the original axis
    w, e, h = -0.2, torch.tensor([10.0, 48.0], dtype=torch.float64), 24.0
    p = tm.return_probability(a, w, elapsed_hours=e, horizon_hours=h, gap_exponent=0.5, unit_hours=24.0)
    s = lambda t: tm.survival(a, torch.tensor(w, dtype=torch.float64), tm.to_model_time(t, 0.5, 24.0))  # noqa: E731
    torch.testing.assert_close(p, 1 - s(e + h) / s(e))
    # with a defective law the long-horizon probability stays below the return mass
    p_far = tm.return_probability(a, -0.2, elapsed_hours=0.0, horizon_hours=1e5)
    torch.testing.assert_close(p_far, 1 - tm.no_return_probability(a, torch.tensor(-0.2, dtype=torch.float64)))
    with pytest.raises(ValueError):
        tm.return_probability(a, 0.0, elapsed_hours=-1.0, horizon_hours=1.0)


def test_time_head_shapes_and_parameters():
    torch.manual_seed(0)
    head = tm.TimeHead(8)
    h = torch.randn(4, 8)
    a = head(h)
    assert a.shape == (4,)
    assert head.w.dim() == 0 and float(head.w.detach()) == pytest.approx(-0.1)
    loss = head.nll(h, torch.tensor([0.0, 1.0, 2.0, 3.0])).mean()
    loss.backward()
    assert head.w.grad is not None and head.linear.weight.grad is not None
    with pytest.raises(ValueError):
        tm.TimeHead(0)


@pytest.mark.gpu
def test_predictions_on_cuda_match_cpu():
    a = torch.linspace(-5, 3, 1000, dtype=torch.float64)
    kw = {"gap_exponent": 0.5, "unit_hours": 24.0, "cutoff_hours": 600.0}
    for w in (-0.3, 0.0, 0.2):
        cpu = tm.expected_return_hours(a, w, **kw)
        gpu = tm.expected_return_hours(a.cuda(), torch.tensor(w, device="cuda"), **kw)
        for c, g in zip(cpu, gpu, strict=True):
            assert g.device.type == "cuda"
            torch.testing.assert_close(g.cpu(), c)
        torch.testing.assert_close(tm.median_return_hours(a.cuda(), w, **kw).cpu(), tm.median_return_hours(a, w, **kw))
