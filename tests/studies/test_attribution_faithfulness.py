"""Batched ROAD and confidence drop equal pytorch-grad-cam's own metrics, image by image."""
import numpy as np
import torch

import attnlab
from attnlab.studies.attribution.faithfulness import TIE_JITTER, attribution_metrics


def reference(model, x, maps, targets, percentiles, seed=0):
    """pytorch-grad-cam's metric classes, called as documented, batch by batch."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    ranked = maps + TIE_JITTER * np.random.default_rng(seed).random(maps.shape, dtype=np.float32)
    tb = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        morf = ROADMostRelevantFirstAverage(list(percentiles))(x, ranked, tb, model)
        lerf = ROADLeastRelevantFirstAverage(list(percentiles))(x, ranked, tb, model)
        change = CamMultImageConfidenceChange()(x, maps, tb, model)
    return np.asarray(morf).reshape(-1), np.asarray(lerf).reshape(-1), np.asarray(change).reshape(-1)


def test_batched_road_equals_pytorch_grad_cam():
    torch.manual_seed(0)
    net = attnlab.create_model("vit_micro_patch4_32").eval()
    x = torch.randn(5, 3, 32, 32)
    maps = np.random.default_rng(1).random((5, 32, 32), dtype=np.float32)
    targets = [0, 3, 3, 7, 9]
    got = attribution_metrics(net, x, maps, targets, percentiles=(20, 50, 80), batch_size=5)
    morf, lerf, change = reference(net, x, maps, targets, (20, 50, 80))
    np.testing.assert_allclose(got["road_most_relevant_first"], morf, atol=1e-6)
    np.testing.assert_allclose(got["road_least_relevant_first"], lerf, atol=1e-6)
    np.testing.assert_allclose(got["confidence_drop"], -change, atol=1e-6)
    np.testing.assert_allclose(got["road_combined"], (lerf - morf) / 2, atol=1e-6)
