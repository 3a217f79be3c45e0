"""The log-normal mixture return-time law, its head, the RMTPP law on the hours axis, and the churn
figures built on them: closed forms checked against hand-computed values and numeric integrals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from thrnn import time_model as tm
from thrnn.churn import ChurnLaw, fit_no_return
from thrnn.models.lognormal_time import LogNormalMixture, LogNormalMixtureHead, censored_nll


def _law(weights, means, sigmas) -> LogNormalMixture:
    w = torch.tensor([weights], dtype=torch.float64)
    return LogNormalMixture(torch.log(w), torch.tensor([means], dtype=torch.float64),
                            torch.log(torch.tensor([sigmas], dtype=torch.float64)))


def _phi_c(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_one_component_is_the_log_normal():
    law = _law([1.0], [math.log(10.0)], [1.0])
    assert float(law.median()) == pytest.approx(10.0, rel=1e-12)
    assert float(law.cdf(10.0)) == pytest.approx(0.5)
    t = math.e * 10.0  # z = 1
    assert float(law.log_density(t)) == pytest.approx(-math.log(t) - 0.5 * math.log(2 * math.pi) - 0.5)
    assert float(law.log_survival(t)) == pytest.approx(math.log(_phi_c(1.0)))
    assert float(law.quantile(0.9)) == pytest.approx(10.0 * math.exp(1.2815515655446004), rel=1e-9)
    assert float(law.no_return()) == 0.0


def test_two_components_by_hand():
    law = _law([0.25, 0.75], [math.log(2.0), math.log(30.0)], [0.5, 1.5])
    t = 12.0
    z1, z2 = (math.log(t) - math.log(2.0)) / 0.5, (math.log(t) - math.log(30.0)) / 1.5
    s = 0.25 * _phi_c(z1) + 0.75 * _phi_c(z2)
    f = (0.25 * math.exp(-z1 * z1 / 2) / 0.5 + 0.75 * math.exp(-z2 * z2 / 2) / 1.5) / (math.sqrt(2 * math.pi) * t)
    assert float(law.log_survival(t).exp()) == pytest.approx(s, rel=1e-12)
    assert float(law.log_density(t).exp()) == pytest.approx(f, rel=1e-12)
    # quantiles invert the cdf; the density integrates to the cdf
    for q in (0.1, 0.5, 0.9):
        assert float(law.cdf(law.quantile(q))) == pytest.approx(q, abs=1e-10)
    area, _ = integrate.quad(lambda x: float(law.log_density(x).exp()), 0, t, limit=200)
    assert area == pytest.approx(float(law.cdf(t)), rel=1e-7)
    # mean below the cut-off in closed form = the numeric integral of t f(t) / F(C)
    c = 100.0
    num, _ = integrate.quad(lambda x: x * float(law.log_density(x).exp()), 0, c, limit=200)
    mean, tail = law.mean_below(c)
    assert float(mean) == pytest.approx(num / float(law.cdf(c)), rel=1e-7)
    assert float(tail) == pytest.approx(1 - float(law.cdf(c)))


def test_censored_gaps_score_the_survival_and_stacking_round_trips():
    law = _law([0.5, 0.5], [0.0, 3.0], [1.0, 0.5])
    both = LogNormalMixture(*(torch.cat([x, x]) for x in (law.log_weights, law.means, law.log_scales)))
    hours = torch.tensor([5.0, 5.0], dtype=torch.float64)
    loss = censored_nll(both, hours, torch.tensor([False, True]))
    assert float(loss[0]) == pytest.approx(-float(law.log_density(5.0)))
    assert float(loss[1]) == pytest.approx(-float(law.log_survival(5.0)))
    again = LogNormalMixture.from_stacked(both.stack())
    assert torch.equal(again.means, both.means) and torch.equal(again.log_scales, both.log_scales)


def test_head_starts_at_the_data_scale_and_learns():
    torch.manual_seed(0)
    head = LogNormalMixtureHead(hidden_size=3, n_covariates=2, n_components=4)
    head.set_scale(center=2.0, spread=0.8)
    with torch.no_grad():
        head.layer.bias.zero_()  # tanh(0) = 0: the outputs are the output layer's biases
    assert float(head.center) == 2.0 and float(head.spread) == pytest.approx(0.8)
    law = head(torch.zeros(5, 3), torch.zeros(5, 2))
    assert law.means.shape == (5, 4)
    # zero inputs and hidden biases: means = centre + the spread-out initial biases, scales = the data's spread
    assert law.means[0].tolist() == pytest.approx([2.0 + b for b in np.linspace(-1, 1, 4)], abs=1e-6)
    assert law.log_scales.exp()[0].tolist() == pytest.approx([0.8] * 4, rel=1e-6)
    assert torch.allclose(law.log_weights.exp().sum(1), torch.ones(5))
    gaps = torch.exp(math.log(50.0) + 0.5 * torch.randn(256))
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    first = None
    for _ in range(200):
        law = head(torch.zeros(256, 3), torch.zeros(256, 2))
        loss = censored_nll(law, gaps, torch.zeros(256, dtype=torch.bool)).mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 0.5
    assert float(head(torch.zeros(1, 3), torch.zeros(1, 2)).median()) == pytest.approx(float(gaps.median()), rel=0.1)


@pytest.mark.parametrize("w", [-0.3, 0.0, 0.4])
def test_rmtpp_law_on_the_hours_axis(w):
    a = torch.tensor([0.2, -0.5], dtype=torch.float64)
    law = tm.RmtppLaw(a, w, gap_exponent=0.5, unit_hours=24.0)
    kw = {"gap_exponent": 0.5, "unit_hours": 24.0, "cutoff_hours": 1e9}
    median = tm.median_return_hours(a, torch.tensor(w, dtype=torch.float64), **kw)
    assert torch.allclose(law.median(), median, rtol=1e-10)
    for i in range(2):
        sub = law[i:i + 1]
        c = 300.0
        area, _ = integrate.quad(lambda x, sub=sub: float(sub.log_density(torch.tensor([x])).exp()), 0, c, limit=400)
        assert area == pytest.approx(float(sub.cdf(torch.tensor([c]))), rel=1e-6)
    if w < 0:  # defective: finite quantiles below 1 - P(never), none above
        never = float(law.no_return()[0])
        assert never > 0.01
        assert math.isfinite(float(law[0:1].quantile(0.9 * (1 - never))[0]))
        assert math.isinf(float(law[0:1].quantile(1 - never / 2)[0]))


def test_fit_no_return_maximises_the_censored_likelihood():
    # two returns and one user gone with S(e) = 0: 2 log(1-p) + log p -> p = 1/3
    assert fit_no_return(np.log(np.array([1e-300])), 2) == pytest.approx(1 / 3, abs=1e-12)
    # one return, two gone: log(1-p) + 2 log p -> 2/3
    assert fit_no_return(np.array([-800.0, -800.0]), 1) == pytest.approx(2 / 3, abs=1e-12)
    # one return, S(e) = 0.2: -1/(1-p) + 0.8/(0.2 + 0.8 p) = 0 -> p = 0.375
    assert fit_no_return(np.log(np.array([0.2])), 1) == pytest.approx(0.375, abs=1e-12)
    # S(e) = 0.5 with one return: the law explains the wait, no mass is needed
    assert fit_no_return(np.log(np.array([0.5])), 1) == 0.0
    assert fit_no_return(np.zeros(0), 10) == 0.0


def test_churn_law_conditions_on_the_elapsed_time():
    law = _law([1.0], [math.log(20.0)], [1.0])
    cl = ChurnLaw(law, p0=0.2)

    def s_tot(t: float) -> float:
        return 0.2 + 0.8 * _phi_c((math.log(t) - math.log(20.0)) / 1.0)

    e = torch.tensor([30.0], dtype=torch.float64)
    for h in (24.0, 168.0, 720.0):
        assert float(cl.return_within(e, h)) == pytest.approx(1 - s_tot(30 + h) / s_tot(30), rel=1e-10)
    assert float(cl.never(e)) == pytest.approx(0.2 / s_tot(30), rel=1e-9)
    m = float(cl.median_after(e, 600.0))
    assert m > 30 and s_tot(m) == pytest.approx(s_tot(30) / 2, rel=1e-9)
    # numeric conditional mean over (e, C]
    c = 600.0
    f = lambda x: 0.8 * math.exp(-0.5 * (math.log(x) - math.log(20.0)) ** 2) / (x * math.sqrt(2 * math.pi))  # noqa: E731
    num, _ = integrate.quad(lambda x: x * f(x), 30, c, limit=200)
    den, _ = integrate.quad(f, 30, c, limit=200)
    assert float(cl.mean_after(e, c)) == pytest.approx(num / den, rel=1e-6)
    # long gone: never returning outweighs returning, so the median is the cut-off
    far = torch.tensor([5000.0], dtype=torch.float64)
    assert float(cl.median_after(far, 600.0)) == 600.0
    assert float(cl.never(far)) > 0.5
    with pytest.raises(ValueError, match="p0"):
        ChurnLaw(law, p0=1.0)
