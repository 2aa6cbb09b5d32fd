"""Linear CKA with the unbiased HSIC (Song et al. 2012), full batch and minibatch (Nguyen et al. 2021)."""
import itertools
import math

import pytest
import torch

from attnlab.metrics import MetricInputError, MinibatchCKA, gram_linear, hsic_matrix, linear_cka, unbiased_hsic

F64 = torch.float64


def hsic_u_statistic(k, l):
    """HSIC_1 from its definition: the U-statistic over ordered 4-tuples of distinct images,
    h = k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (Song et al. 2012, Theorem 2)."""
    n = k.shape[0]
    k, l = k.tolist(), l.tolist()
    total = sum(k[i][j] * l[i][j] + k[i][j] * l[q][r] - 2 * k[i][j] * l[i][q]
                for i, j, q, r in itertools.permutations(range(n), 4))
    return float(total) / (n * (n - 1) * (n - 2) * (n - 3))


def features(n, d, seed=0):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def minibatch_cka(x, y, batch=500):
    """Minibatch CKA of two feature sets, in minibatches of ``batch`` images (memory ~ batch^2)."""
    cka = MinibatchCKA()
    for start in range(0, x.shape[0], batch):
        cka.update(torch.stack([gram_linear(x[start:start + batch]), gram_linear(y[start:start + batch])]))
    return cka.cka()[0, 1].item()


def orthogonal(d, seed=1):
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    return q


def test_hsic_equals_its_u_statistic_definition():
    x, y = features(7, 3), features(7, 4, seed=2)
    y[:, 0] += x[:, 0]
    k, l = x @ x.T, y @ y.T
    assert unbiased_hsic(k, l).item() == pytest.approx(hsic_u_statistic(k, l), rel=1e-12)
    # the features are centred before the Gram matrix: HSIC_1 does not see a translation
    assert unbiased_hsic(gram_linear(x + 5.0), gram_linear(y - 2.0)).item() == pytest.approx(hsic_u_statistic(k, l),
                                                                                           rel=1e-9)


def test_cka_is_one_on_the_diagonal():
    grams = torch.stack([gram_linear(features(16, d, seed=d)) for d in (2, 5, 9)])
    cka = MinibatchCKA()
    cka.update(grams)
    assert torch.allclose(cka.cka().diagonal(), torch.ones(3, dtype=F64), atol=1e-12)
    assert torch.allclose(cka.cka(), cka.cka().T)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x = features(40, 6)
    y = torch.tanh(x @ features(6, 5, seed=3)) + 0.3 * features(40, 5, seed=4)
    base = linear_cka(x, y).item()
    assert 0.05 < base < 0.999
    assert linear_cka(x @ orthogonal(6), y).item() == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, 7.5 * y).item() == pytest.approx(base, rel=1e-10)
    assert linear_cka(0.01 * x @ orthogonal(6, seed=5), y @ orthogonal(5, seed=6)).item() == pytest.approx(base, rel=1e-10)


def test_closed_forms():
    x = features(50, 8)
    # a similarity transform of X (rotation, isotropic scale, shift) is the same representation: CKA 1
    assert linear_cka(x, 3.0 * x @ orthogonal(8) + 1.5).item() == pytest.approx(1.0, abs=1e-12)
    # X = u, Y = [u, s v] with u, v independent unit-variance: CKA = ||C_xy||^2 / (||C_xx|| ||C_yy||) = 1 / sqrt(1 + s^4)
    # (every minibatch's HSIC_1 is unbiased, so their mean converges to the population value)
    n, s = 20000, 1.5
    u, v = features(n, 1, seed=7), features(n, 1, seed=8)
    assert minibatch_cka(u, torch.cat([u, s * v], 1)) == pytest.approx(1 / math.sqrt(1 + s ** 4), abs=0.01)
    # independent random features: the unbiased HSIC's expectation is 0, so CKA is close to 0 at large n
    assert abs(minibatch_cka(features(10000, 20, seed=9), features(10000, 30, seed=10))) < 0.01


def test_one_minibatch_equals_the_full_batch_unbiased_estimate():
    x, y = features(12, 4), features(12, 3, seed=2)
    y[:, 0] += 2 * x[:, 1]
    cka = MinibatchCKA()
    cka.update(torch.stack([gram_linear(x), gram_linear(y)]))
    k, l = x @ x.T, y @ y.T
    expected = hsic_u_statistic(k, l) / math.sqrt(hsic_u_statistic(k, k) * hsic_u_statistic(l, l))
    assert cka.cka()[0, 1].item() == pytest.approx(expected, rel=1e-10)
    assert cka.cka()[0, 1].item() == pytest.approx(linear_cka(x, y).item(), rel=1e-12)
    assert (cka.n_batches, cka.n_images) == (1, 12)


def test_minibatch_cka_is_the_ratio_of_hsic_averaged_over_minibatches():
    """Nguyen et al.: mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i)),
    every minibatch weighing the same whatever its size."""
    x, y = features(17, 4), features(17, 3, seed=2)
    y[:, :2] += x[:, :2]
    cka = MinibatchCKA()
    hxy, hxx, hyy = [], [], []
    for part in (slice(0, 6), slice(6, 11), slice(11, 17)):
        xi, yi = x[part], y[part]
        cka.update(torch.stack([gram_linear(xi), gram_linear(yi)]))
        k, l = xi @ xi.T, yi @ yi.T
        hxy.append(hsic_u_statistic(k, l))
        hxx.append(hsic_u_statistic(k, k))
        hyy.append(hsic_u_statistic(l, l))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    expected = mean(hxy) / math.sqrt(mean(hxx) * mean(hyy))
    assert cka.cka()[0, 1].item() == pytest.approx(expected, rel=1e-10)
    assert cka.hsic()[0, 1].item() == pytest.approx(mean(hxy), rel=1e-10)
    assert (cka.n_batches, cka.n_images) == (3, 17)
    # not the mean of the per-minibatch CKAs, and not the full-batch estimate
    per_batch = mean([a / math.sqrt(b * c) for a, b, c in zip(hxy, hxx, hyy)])
    assert abs(expected - per_batch) > 1e-6 and abs(expected - linear_cka(x, y).item()) > 1e-6


def test_hsic_matrix_of_two_stacks_is_the_cross_block():
    grams = torch.stack([gram_linear(features(9, d, seed=d)) for d in (2, 3, 4, 5)])
    full = hsic_matrix(grams)
    assert torch.allclose(hsic_matrix(grams[:2], grams[2:]), full[:2, 2:], rtol=1e-12)


def test_bad_input():
    with pytest.raises(MetricInputError, match="at least 4 images"):
        hsic_matrix(torch.stack([gram_linear(features(3, 2))]))
    with pytest.raises(MetricInputError, match="same images"):
        linear_cka(features(5, 2), features(6, 2))
    with pytest.raises(MetricInputError, match=r"\[S, n, n\]"):
        hsic_matrix(torch.zeros(4, 4))
    with pytest.raises(MetricInputError, match="floating-point"):
        gram_linear(torch.zeros(4, 2, dtype=torch.int64))
    cka = MinibatchCKA()
    with pytest.raises(MetricInputError, match="no minibatch"):
        cka.cka()
    cka.update(torch.stack([gram_linear(features(5, 2))] * 2))
    with pytest.raises(MetricInputError, match="3 representations"):
        cka.update(torch.stack([gram_linear(features(5, 2))] * 3))
