"""Perturbation and deletion / insertion curves on models whose answer is known in advance."""
import numpy as np
import pytest
import torch
from torch import nn

from attnlab.errors import AttnlabError
from attnlab.studies.attribution import deletion_insertion, perturbation_curves
from attnlab.studies.attribution.perturbation import PERTURBATION_FRACTIONS

ROWS, COLS = slice(8, 12), slice(20, 24)   # patch (2, 5) of an 8x8 grid of 4x4-pixel patches


class OnePatch(nn.Module):
    """Class 0's logit is 10x the mean of channel 0 over one known patch; class 1's is always 1."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        z0 = self.scale * x[:, 0, ROWS, COLS].mean(dim=(1, 2))
        return torch.stack([z0, torch.ones_like(z0)], dim=1)


class Constant(nn.Module):
    """The same logits whatever the input."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2, 1.0]))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def _inputs(n=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.1
    x[:, :, ROWS, COLS] = 1.0                      # the patch class 0 reads
    maps = np.random.default_rng(0).random((n, 32, 32)).astype(np.float32) * 0.5
    maps[:, ROWS, COLS] = 1.0                      # ... is the most relevant patch
    return x, maps


def hand_trapezoid(xs, ys):
    return sum((xs[j + 1] - xs[j]) * (ys[j] + ys[j + 1]) / 2 for j in range(len(xs) - 1))


def test_positive_curve_drops_at_the_first_step_and_negative_does_not():
    x, maps = _inputs()
    curves = perturbation_curves(OnePatch(), x, maps, [0, 0, 0], (8, 8), batch_size=2)
    assert list(curves) == ["perturbation_positive_probability", "perturbation_positive_agreement",
                            "perturbation_negative_probability", "perturbation_negative_agreement"]
    pos, neg = curves["perturbation_positive_probability"], curves["perturbation_negative_probability"]
    np.testing.assert_allclose(pos.fractions, [0.0, *PERTURBATION_FRACTIONS])
    high, low = 1 / (1 + np.exp(-9.0)), 1 / (1 + np.exp(1.0))   # softmax of (10, 1) and of (0, 1)
    np.testing.assert_allclose(pos.values[:, 0], high, rtol=1e-6)
    np.testing.assert_allclose(pos.values[:, 1:], low, rtol=1e-6)      # the known patch goes first
    np.testing.assert_allclose(neg.values, high, rtol=1e-6)            # ... and last: never within 90%
    agree_pos, agree_neg = curves["perturbation_positive_agreement"], curves["perturbation_negative_agreement"]
    assert (agree_pos.values[:, 0] == 1).all() and (agree_pos.values[:, 1:] == 0).all()
    assert (agree_neg.values == 1).all()
    for curve in curves.values():
        for i in range(len(x)):
            assert np.isclose(curve.area()[i], hand_trapezoid(curve.fractions, curve.values[i]))
    assert np.isclose(pos.area()[0], 0.05 * (high + low) + 0.8 * low)
    assert pos.area_name == "perturbation_positive_probability_auc"


def test_top1_against_labels_when_there_are_labels_and_batching_changes_nothing():
    x, maps = _inputs()
    one = perturbation_curves(OnePatch(), x, maps, [0, 0, 0], (8, 8), labels=np.array([0, 1, 0]), batch_size=1)
    assert "perturbation_positive_accuracy" in one and "perturbation_positive_agreement" not in one
    acc = one["perturbation_positive_accuracy"].values
    assert acc[:, 0].tolist() == [1, 0, 1] and acc[:, 1:].tolist() == [[0] * 9, [1] * 9, [0] * 9]
    three = perturbation_curves(OnePatch(), x, maps, [0, 0, 0], (8, 8), labels=np.array([0, 1, 0]), batch_size=3)
    for name in one:
        np.testing.assert_allclose(one[name].values, three[name].values, rtol=1e-6)


def test_relevance_is_averaged_over_each_patch():
    x, maps = _inputs(1)
    maps[:] = 0.0
    maps[0, 9, 21] = 1.0                           # one pixel inside the known patch: the patch ranks first
    maps[0, 0, 0:2] = 0.9                          # two pixels of patch (0, 0): a higher patch mean than 1/16
    maps[0, 0:4, 0:4] += 0.01
    pos = perturbation_curves(OnePatch(), x, maps, [0], (8, 8))["perturbation_positive_probability"]
    # 10% of 64 patches = 6: patch (0, 0) and the known one are among the first 6 either way
    assert pos.values[0, 1] < 0.5
    maps[0, 9, 21] = 0.0
    maps[0, ROWS, COLS] = -1.0                     # now ranked last: removal never reaches it within 90%
    assert (perturbation_curves(OnePatch(), x, maps, [0], (8, 8))["perturbation_positive_probability"]
            .values > 0.99).all()


def test_deletion_and_insertion():
    x, maps = _inputs(2)
    x[:, :, :, :] = 0.0
    x[:, :, ROWS, COLS] = 1.0
    curves = deletion_insertion(OnePatch(), x, maps, [0, 0], steps=64, batch_size=1)   # 16 pixels a step
    deletion, insertion = curves["deletion_probability"], curves["insertion_probability"]
    np.testing.assert_allclose(deletion.fractions, np.linspace(0, 1, 65))
    high, low = 1 / (1 + np.exp(-9.0)), 1 / (1 + np.exp(1.0))
    np.testing.assert_allclose(deletion.values[:, 0], high, rtol=1e-6)
    np.testing.assert_allclose(deletion.values[:, 1:], low, rtol=1e-6)     # the 16 known pixels go first
    assert (insertion.values[:, 0] < high - 0.01).all()                    # the blur weakens the patch
    np.testing.assert_allclose(insertion.values[:, 1:], high, rtol=1e-6)   # ... and they come back first
    assert deletion.area_name == "deletion_auc" and insertion.area_name == "insertion_auc"
    for c in curves.values():
        assert np.isclose(c.area()[1], hand_trapezoid(c.fractions, c.values[1]))


def test_a_constant_model_gives_flat_curves():
    x, maps = _inputs(2)
    p = torch.tensor([0.3, -0.2, 1.0]).softmax(0)[2].item()
    curves = {**deletion_insertion(Constant(), x, maps, [2, 2], steps=8),
              **perturbation_curves(Constant(), x, maps, [2, 2], (8, 8))}
    for name in ["deletion_probability", "insertion_probability", "perturbation_positive_probability",
                 "perturbation_negative_probability"]:
        np.testing.assert_allclose(curves[name].values, p, rtol=1e-6)
    np.testing.assert_allclose(curves["deletion_probability"].area(), p, rtol=1e-6)        # over 0..1
    np.testing.assert_allclose(curves["perturbation_positive_probability"].area(), 0.9 * p, rtol=1e-6)  # 0..0.9


def test_bad_arguments():
    x, maps = _inputs(2)
    with pytest.raises(AttnlabError, match="one .H, W. map per image"):
        perturbation_curves(OnePatch(), x, maps[:1], [0, 0], (8, 8))
    with pytest.raises(AttnlabError, match="2 targets for 1 images"):
        deletion_insertion(OnePatch(), x[:1], maps[:1], [0, 0])
    with pytest.raises(AttnlabError, match="deletion steps must be a whole number"):
        deletion_insertion(OnePatch(), x, maps, [0, 0], steps=0)
