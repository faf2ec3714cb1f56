"""The RITM clicker on hand-worked masks, and NoC on hand-made curves."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.metrics import dice, iou, number_of_clicks
from napari_active_sam.core.sim.clicker import ritm_next_click


def test_click_goes_to_the_deepest_false_negative_ties_row_major():
    gt = np.zeros((12, 12), bool)
    gt[2:7, 3:10] = True  # rows 2-6, cols 3-9: depth 3 along row 4, cols 5-7
    assert ritm_next_click(gt, np.zeros_like(gt)) == (4, 5, True)


def test_image_border_counts_as_boundary():
    gt = np.ones((5, 5), bool)
    assert ritm_next_click(gt, np.zeros_like(gt)) == (2, 2, True)
    gt = np.zeros((6, 8), bool)
    gt[1:5, 0:4] = True  # touches the left border: col 0 is only 1 px from it
    # Without the border as boundary, (2, 0) would be 2 px deep and win the tie.
    assert ritm_next_click(gt, np.zeros_like(gt)) == (2, 1, True)


def test_clicked_pixels_are_excluded():
    gt = np.ones((5, 5), bool)
    clicked = np.zeros_like(gt)
    clicked[2, 2] = True
    assert ritm_next_click(gt, np.zeros_like(gt), clicked) == (1, 1, True)


def test_positive_only_if_the_false_negative_is_strictly_deeper():
    gt = np.zeros((9, 20), bool)
    pred = np.zeros_like(gt)
    gt[2:7, 2:7] = True  # FN 5×5, depth 3 at (4, 4)
    pred[2:7, 12:17] = True  # FP 5×5, depth 3 at (4, 14)
    assert ritm_next_click(gt, pred) == (4, 14, False)  # a tie goes to the negative click
    gt[1:8, 1:8] = True  # FN 7×7, depth 4
    assert ritm_next_click(gt, pred) == (4, 4, True)


def test_no_error_left_gives_none():
    gt = np.zeros((4, 4), bool)
    gt[1:3, 1:3] = True
    assert ritm_next_click(gt, gt.copy()) is None
    assert ritm_next_click(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) is None
    with pytest.raises(ValueError):
        ritm_next_click(gt, gt[:3])


def test_iou_dice_and_noc():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert iou(a, b) == pytest.approx(1 / 3) and dice(a, b) == pytest.approx(0.5)
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    curve = [0.5, 0.79, 0.86, 0.84, 0.91]
    assert number_of_clicks(curve, 0.80) == 3
    assert number_of_clicks(curve, 0.85) == 3
    assert number_of_clicks(curve, 0.90) == 5
    assert number_of_clicks(curve, 0.95) == 20
    assert number_of_clicks([0.9] * 30, 0.95, max_clicks=20) == 20
    assert number_of_clicks([0.1] * 25 + [0.99], 0.95) == 20  # later than 20 does not count


def test_nested_monte_carlo_eig_converges_to_the_closed_form():
    from napari_active_sam.core.active.acquisition import mutual_information, nested_monte_carlo_eig

    heads = np.array([[0.9, 0.5, 0.02, 0.7], [0.1, 0.5, 0.03, 0.7], [0.8, 0.5, 0.01, 0.2]])
    exact = mutual_information(heads)
    fine = nested_monte_carlo_eig(heads, outer=200_000, inner=200_000,
                                  rng=np.random.default_rng(0))  # fmt: skip
    assert np.abs(fine - exact).max() < 0.01
    assert abs(exact[1]) < 1e-9 and abs(fine[1]) < 0.01  # heads agree: nothing to learn
    assert exact[0] > exact[3] > exact[2]


def test_oracle_choice_picks_the_best_head():
    from napari_active_sam.core.metrics import oracle_choice

    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    heads = np.stack([np.full((4, 4), 0.9), gt * 0.8, np.zeros((4, 4))])
    mask, score = oracle_choice(gt, heads)
    assert score == 1.0 and np.array_equal(mask, gt)
