"""The metrics against values computed by hand."""

import pytest
import torch

from divqat import metrics


def test_expected_calibration_error_by_hand():
    # Confidences 0.9, 0.9 (bin 14 of 15: one right, one wrong) and 0.5, 0.6 (bins 7 and 8, both right):
    # (2 * |0.5 - 0.9| + 1 * |1 - 0.5| + 1 * |1 - 0.6|) / 4 = (0.8 + 0.5 + 0.4) / 4 = 0.425.
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 0, 1])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.425)
    one_hot_right = torch.eye(3)
    assert metrics.expected_calibration_error(one_hot_right, torch.arange(3)) == 0.0
