"""Baselines: ranks by hand and against brute force, Hawkes math, the CLI, and the reference figures."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy import integrate
from scipy.optimize import check_grad

from thrnn.baselines import hawkes, median, ranking
from thrnn.baselines import main as baselines_main
from thrnn.baselines.cli import configure_parser, non_neural_baselines
from thrnn.baselines.protocol import session_table, targets_from_split, train_gap_hours
from thrnn.io import split_from_sessions

H = 3600.0


def _split(tmp_path=None):
    # user 0: 5 sessions -> 4 train, 1 test; user 1: 5 sessions, session 4 continues session 3 (gap 0)
    t0 = 1_700_000_000.0
    s0 = [
        [(1, t0), (2, t0 + 60), (3, t0 + 120)],
        [(1, t0 + 10 * H), (2, t0 + 10 * H + 60)],
        [(2, t0 + 30 * H), (4, t0 + 30 * H + 60)],
        [(1, t0 + 40 * H), (2, t0 + 40 * H + 60)],
        [(3, t0 + 45 * H), (1, t0 + 45 * H + 60), (2, t0 + 45 * H + 120)],  # test, gap 5 h - 60 s
    ]
    s1 = [
        [(4, t0), (4, t0 + 60)],
        [(3, t0 + 2 * H), (4, t0 + 2 * H + 60)],
        [(2, t0 + 6 * H), (1, t0 + 6 * H + 60)],
        [(1, t0 + 20 * H), (5, t0 + 20 * H + 60)],  # still train: floor(0.8 * 5) = 4
        [(3, t0 + 20 * H + 120), (2, t0 + 20 * H + 180)],
    ]
    return split_from_sessions({0: s0, 1: s1}, None if tmp_path is None else tmp_path / "data",
                               continuations={1: {4}})


def test_popularity_ranks_by_hand_with_ties():
    pop = np.array([0, 5, 3, 5, 0])  # items 1..4; padding count ignored
    np.testing.assert_array_equal(ranking.popularity_ranks(pop, np.array([1, 3, 2, 4])), [2, 2, 3, 4])


def test_targets_follow_the_protocol():
    split = _split()
    t = targets_from_split(split)
    # user 0: test session 4 (3 items) -> 2 next-item targets; user 1: test sessions 4 only (cont.) -> 1
    np.testing.assert_array_equal(t.next_items, [1, 2, 2])
    np.testing.assert_array_equal(t.next_prev_items, [3, 1, 3])
    np.testing.assert_array_equal(t.next_users, [0, 0, 1])
    # first items: the continuation is not a first-item target; prev = last item of the train session
    np.testing.assert_array_equal(t.first_items, [3])
    np.testing.assert_array_equal(t.first_prev_items, [2])
    np.testing.assert_allclose(t.gap_true_hours, [(5 * H - 60) / H])
    np.testing.assert_array_equal(t.gap_users, [0])


def test_transition_counts_and_markov_ranks_by_hand():
    split = _split()
    inner, between = ranking.transition_matrix(split)
    dense = inner.toarray()
    # train within-session transitions: u0: 1-2, 2-3, 1-2, 2-4, 1-2; u1: 4-4, 3-4, 2-1, 1-5 (+ none across)
    assert dense[1, 2] == 3 and dense[2, 3] == 1 and dense[2, 4] == 1 and dense[4, 4] == 1
    assert dense[3, 4] == 1 and dense[2, 1] == 1 and dense[1, 5] == 1 and dense.sum() == 9
    # between sessions (train only): u0: 3->1, 2->2, 4->1; u1: 4->3, 4->2, 1->1
    b = between.toarray()
    assert b[3, 1] == 1 and b[2, 2] == 1 and b[4, 1] == 1 and b[4, 3] == 1 and b[4, 2] == 1 and b[1, 1] == 1
    assert b.sum() == 6
    pop = ranking.item_popularity(split)
    np.testing.assert_array_equal(pop, [0, 5, 5, 2, 4, 1])
    # prev 1: 2 (3 transitions), 5 (1), then by popularity 1 (5), 4 (4), 3 (2)
    np.testing.assert_array_equal(
        ranking.markov_ranks(inner, pop, np.array([1, 1, 1, 1, 1]), np.array([2, 5, 1, 4, 3])), [1, 2, 3, 4, 5]
    )
    # prev 3: 4 (1 transition) leads; 1 and 2 tie on popularity 5 -> each ranks 3 (ties against the model)
    np.testing.assert_array_equal(ranking.markov_ranks(inner, pop, np.array([3, 3, 3]), np.array([4, 2, 1])),
                                  [1, 3, 3])


def _brute_force_ranks(dense: np.ndarray, pop: np.ndarray, prev: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = []
    for p, t in zip(prev, targets, strict=True):
        key = [(dense[p, i], pop[i]) for i in range(1, len(pop))]
        kt = (dense[p, t], pop[t])
        out.append(1 + sum(k > kt for k in key) + sum(k == kt for k in key) - 1)
    return np.array(out)


def test_markov_matches_brute_force_on_random_sessions():
    rng = np.random.default_rng(3)
    sessions = {}
    for u in range(8):
        t, user = 1_600_000_000.0, []
        for _ in range(6):
            n = int(rng.integers(2, 7))
            user.append([(int(i), t + 60 * k) for k, i in enumerate(rng.integers(1, 12, size=n))])
            t += 60 * n + rng.uniform(1, 50) * H
        sessions[u] = user
    split = split_from_sessions(sessions)
    t = targets_from_split(split)
    pop = ranking.item_popularity(split)
    inner, between = ranking.transition_matrix(split)
    np.testing.assert_array_equal(ranking.markov_ranks(inner, pop, t.next_prev_items, t.next_items),
                                  _brute_force_ranks(inner.toarray(), pop, t.next_prev_items, t.next_items))
    np.testing.assert_array_equal(ranking.markov_ranks(between, pop, t.first_prev_items, t.first_items),
                                  _brute_force_ranks(between.toarray(), pop, t.first_prev_items, t.first_items))
    zero = np.zeros_like(inner.toarray())
    np.testing.assert_array_equal(ranking.popularity_ranks(pop, t.next_items),
                                  _brute_force_ranks(zero, pop, t.next_prev_items, t.next_items))


def test_medians_by_hand():
    split = _split()
    gaps = train_gap_hours(split)
    # u0 train gaps: 10h-120s, 20h-60s, 10h-60s; u1: 2h-60s, 4h-60s, 14h-60s (its session 4 continues)
    glob = (10 - 120 / H + 10 - 60 / H) / 2
    assert median.global_median_hours(gaps) == pytest.approx(glob)
    np.testing.assert_allclose(median.user_median_predictions(gaps, np.array([0, 1, 7])),
                               [10 - 60 / H, 4 - 60 / H, glob])


def _direct_loglik(mu, alpha, beta, t):
    ll = 0.0
    for i in range(len(t)):
        ll += np.log(mu + sum(alpha * beta * np.exp(-beta * (t[i] - t[j])) for j in range(i)))
    comp = mu * (t[-1] - t[0]) + sum(alpha * (1 - np.exp(-beta * (t[-1] - tj))) for tj in t)
    return ll - comp


def test_hawkes_likelihood_and_gradient():
    rng = np.random.default_rng(0)
    t = np.cumsum(np.r_[0.0, rng.exponential(10, 40)])
    for x in ([0.05, 0.3, 0.2], [0.01, 0.8, 2.0], [0.2, 0.0, 0.01]):
        nll, _ = hawkes.neg_loglik(np.array(x), t)
        assert -nll == pytest.approx(_direct_loglik(*x, t), rel=1e-10)
        err = check_grad(lambda p: hawkes.neg_loglik(p, t)[0], lambda p: hawkes.neg_loglik(p, t)[1], np.array(x))
        assert err < 1e-3 * (1 + abs(nll))


def _simulate(mu, alpha, beta, n, seed):
    """Ogata thinning for λ(t) = μ + Σ α β e^{-β (t - t_i)}."""
    rng = np.random.default_rng(seed)
    t, exc, out = 0.0, 0.0, [0.0]
    exc = alpha * beta
    while len(out) < n:
        bound = mu + exc
        w = rng.exponential(1 / bound)
        t += w
        exc *= np.exp(-beta * w)
        if rng.uniform() * bound <= mu + exc:
            out.append(t)
            exc += alpha * beta
    return np.array(out)


def test_hawkes_fit_recovers_simulated_parameters():
    times = _simulate(0.05, 0.6, 0.5, 800, seed=1)
    p = hawkes.fit_user(times)
    assert p is not None
    assert p.mu == pytest.approx(0.05, rel=0.3)
    assert p.alpha == pytest.approx(0.6, abs=0.12)
    assert p.beta == pytest.approx(0.5, rel=0.4)
    assert hawkes.fit_user(times) == p  # deterministic


def test_expected_wait_closed_forms():
    # no excitation: exponential waiting time, mean 1/μ
    np.testing.assert_allclose(hawkes.expected_wait_hours(np.array([0.1, 0.01]), np.array([1.0, 1.0]),
                                                          np.zeros(2)), [10.0, 100.0], rtol=1e-6)
    mu, beta, a = 0.02, 0.3, 0.5
    surv = lambda s: np.exp(-mu * s - a / beta * (1 - np.exp(-beta * s)))  # noqa: E731
    expected, _ = integrate.quad(surv, 0, np.inf, limit=200)
    got = hawkes.expected_wait_hours(np.array([mu]), np.array([beta]), np.array([a]))
    assert float(got[0]) == pytest.approx(expected, rel=1e-5)


def test_hawkes_predictions_teacher_forced_and_fallback():
    split = _split()
    pred, users, info = hawkes.hawkes_predictions(session_table(split), 7.0, min_events=5)
    # user 0 has 4 training events (< 5) -> global fallback; user 1 has no real test gap
    np.testing.assert_array_equal(users, [0])
    np.testing.assert_array_equal(pred, [7.0])
    assert info == {"hawkes_fitted_users": 0, "hawkes_fallback_users": 1}
    pred, _, info = hawkes.hawkes_predictions(session_table(split), 7.0, min_events=3)
    assert info["hawkes_fitted_users"] == 1 and pred[0] > 0 and pred[0] != 7.0


@pytest.mark.slow  # tens of seconds on 2 cores: kept out of `make test-fast`
def test_cli_writes_all_baselines_deterministically(tmp_path):
    _split(tmp_path)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    outs = []
    for run in ("a", "b"):
        args = parser.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / run), "--no-progress"])
        assert baselines_main(args) == 0
        res = json.loads((tmp_path / run / "baselines.json").read_text())
        for m in res.values():
            m.pop("fit_seconds")
        outs.append(res)
    assert outs[0] == outs[1]
    assert set(outs[0]) == {"most_popular", "markov1", "median_global", "median_user", "lognormal_user", "hawkes", "repeat_last",
                            "user_recency", "user_decay", "user_markov1", "blend", "sknn"}
    assert set(outs[0]["blend"]["params"]) == {"next", "first"} and "validation" in outs[0]["sknn"]
    assert outs[0]["markov1"]["n_targets"] == 3 and outs[0]["hawkes"]["n_gaps"] == 1
    for name in ("report.md", "metrics.json", "recall_at_k.png", "mrr_at_k.png", "mae_by_gap_bucket.png"):
        assert (tmp_path / "a" / name).exists()


def test_bad_split_is_a_clear_error(tmp_path):
    split = _split()
    split.test.loc[0, "item_id"] = 99
    with pytest.raises(ValueError, match="item ids must lie in"):
        targets_from_split(split)


@pytest.mark.realdata
def test_reference_figures_on_lastfm_jodie():
    """Independent implementations measured these on this split (docs/quality.md)."""
    from tests.conftest import shared_file
    from thrnn.data import read_jodie_tsv, sessionize_frame
    from thrnn.io import Split

    path = shared_file("lastfm-1k-jodie-subset/lastfm_jodie_first10pct.tsv.gz")
    train, test, items, users = sessionize_frame(read_jodie_tsv(str(path)), 3600)
    split = Split(train, test, items, users, {})
    t = targets_from_split(split)
    assert len(t.next_items) == 14003
    pop = ranking.item_popularity(split)
    inner, _ = ranking.transition_matrix(split)
    from thrnn.metrics import ranking_metrics

    m = ranking_metrics(ranking.popularity_ranks(pop, t.next_items))
    assert m["recall@20"] == pytest.approx(0.087, abs=1.5e-3) and m["mrr@20"] == pytest.approx(0.018, abs=1.5e-3)
    m = ranking_metrics(ranking.markov_ranks(inner, pop, t.next_prev_items, t.next_items))
    assert m["recall@20"] == pytest.approx(0.549, abs=1.5e-3) and m["mrr@20"] == pytest.approx(0.395, abs=1.5e-3)
    gaps = train_gap_hours(split)
    from thrnn.metrics import return_time_mae

    mae = return_time_mae(t.gap_true_hours, np.full(len(t.gap_true_hours), median.global_median_hours(gaps)))
    assert mae["mae_hours"] == pytest.approx(50.9, abs=0.1)


def test_non_neural_baselines_on_tiny_split_shapes():
    res = non_neural_baselines(_split())
    assert res["most_popular"]["first_item_n_targets"] == 1
    glob = (10 - 120 / H + 10 - 60 / H) / 2
    assert res["median_global"]["mae_hours"] == pytest.approx(abs((5 * H - 60) / H - glob))


def test_neural_baselines_train_and_evaluate_on_the_same_protocol(tmp_path):
    pytest.importorskip("thrnn.train")
    from thrnn.baselines import neural_baselines

    split = _split(tmp_path)
    res = neural_baselines(tmp_path / "data", tmp_path / "out", epochs=1, seed=0, dataset="lastfm",
                           item_embedding=4, threads=1, n_gap_buckets=5)
    assert set(res) == {"gru4rec", "hrnn"}
    expected_targets = targets_from_split(split)
    for m in res.values():
        assert m["n_targets"] == len(expected_targets.next_items) == 3
        assert m["mae_hours"] is None and m["first_item_recall@20"] is None
        assert (tmp_path / "out" / "runs" / m["model"] / "model.pt").exists()
