"""Prompt sets: boxes around masks, and boxes stretched over the clicks that say the object
reaches beyond them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_active_sam.core.prompts import (
    Click,
    PromptSet,
    box_around,
    correction,
    left_out,
    nearest_filled,
)


def test_the_box_around_a_mask_lies_on_its_pixels_outer_edges():
    mask = np.zeros((20, 30), bool)
    mask[4:9, 10:25] = True
    assert box_around(mask) == (9.5, 3.5, 24.5, 8.5)
    line = np.zeros((20, 30), bool)
    line[7, 3:6] = True
    x0, y0, x1, y1 = box_around(line)
    assert (y1 - y0, x1 - x0) == (1.0, 3.0)  # one pixel thin, still an area
    with pytest.raises(ValueError, match="empty mask"):
        box_around(np.zeros((4, 4), bool))


coordinates = st.floats(min_value=0, max_value=200, allow_nan=False)
clicks = st.lists(st.builds(Click, coordinates, coordinates, st.booleans()), max_size=6)


@given(x0=coordinates, y0=coordinates, w=coordinates, h=coordinates, given_clicks=clicks)
def test_a_stretched_box_holds_the_box_and_every_positive_click_and_no_more(
    x0, y0, w, h, given_clicks
):
    prompts = PromptSet(tuple(given_clicks), box=(x0, y0, x0 + w, y0 + h)).stretched()
    sx0, sy0, sx1, sy1 = prompts.box
    assert prompts.clicks == tuple(given_clicks)
    assert sx0 <= x0 and sy0 <= y0 and sx1 >= x0 + w and sy1 >= y0 + h
    positive = [c for c in given_clicks if c.positive]
    for click in positive:
        assert sx0 < click.x < sx1 and sy0 < click.y < sy1
    # no larger than the box and the positive clicks' pixels together
    assert sx0 == min([x0] + [c.x - 0.5 for c in positive])
    assert sy1 == max([y0 + h] + [c.y + 0.5 for c in positive])


def test_without_a_box_nothing_is_stretched():
    prompts = PromptSet((Click(3.0, 4.0, True),))
    assert prompts.stretched() is prompts


def test_a_correction_of_a_mask_asks_with_its_box_and_the_clicks():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    inside, outside, negative = Click(15.0, 15.0), Click(30.0, 12.0), Click(2.0, 2.0, False)
    asked = PromptSet((inside, negative)).refining(mask)
    assert asked.box == (9.5, 9.5, 19.5, 19.5) and asked.clicks == (inside, negative)
    assert PromptSet((outside,)).refining(mask).box == (9.5, 9.5, 30.5, 19.5)


def test_clicks_where_the_object_is_not_yet_get_a_box_of_its_size_on_a_neighbour():
    neighbour = np.zeros((40, 60), bool)
    neighbour[10:20, 10:30] = True  # a box 20 wide, 10 high
    click, negative = Click(45.0, 25.0), Click(44.0, 22.0, False)
    asked = PromptSet((click, negative)).placed(neighbour)
    assert asked.box == (35.0, 20.0, 55.0, 30.0) and asked.clicks == (click, negative)
    two = PromptSet((Click(40.0, 25.0), Click(50.0, 25.0))).placed(neighbour)
    assert two.box == (35.0, 20.0, 55.0, 30.0)  # centred between them
    apart = PromptSet((Click(10.0, 25.0), Click(50.0, 25.0))).placed(neighbour)
    assert apart.box == (9.5, 20.0, 50.5, 30.0)  # stretched over both
    at_the_edge = PromptSet((Click(2.0, 38.0),)).placed(neighbour)
    assert at_the_edge.box == (-0.5, 29.5, 19.5, 39.5)  # its size, moved onto the slice
    assert PromptSet((negative,)).placed(neighbour) == PromptSet((negative,))


def test_the_nearest_slice_holding_an_object_is_found_outwards_from_a_slice():
    labels = np.zeros((7, 4, 4), np.int32)
    labels[1, 0, 0] = labels[5, 3, 3] = 2
    labels[3, 1, 1] = 1
    assert nearest_filled(labels, 3, 2) == 1  # slices 1 and 5 as near: the lower
    assert nearest_filled(labels, 4, 2) == 5
    assert nearest_filled(labels, 5, 2) == 5  # on the slice itself
    assert nearest_filled(labels, 0, 1) == 3
    assert nearest_filled(labels == 2, 6) == 5  # a boolean object
    assert nearest_filled(labels, 3, 9) is None


def test_the_clicks_a_mask_leaves_out_are_positive_outside_and_negative_inside():
    """A click counts on the pixel it falls in: 4.6 is pixel 5, 4.4 pixel 4 (pixel centres
    lie on whole coordinates), and one off the slice on its nearest pixel."""
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True  # rows and columns 2-4
    inside, negative_inside = Click(3, 3, True), Click(2.0, 4.4, False)
    outside, on_the_edge = Click(4.6, 3, True), Click(3, 4.6, True)
    off_the_slice = Click(-3, 12, False)
    prompts = PromptSet((inside, negative_inside, outside, on_the_edge, off_the_slice))
    assert left_out(mask, prompts) == (negative_inside, outside, on_the_edge)
    assert left_out(mask, PromptSet((inside, off_the_slice))) == ()
    assert left_out(np.ones((10, 10), bool), PromptSet((off_the_slice,))) == (off_the_slice,)
    assert left_out(mask, PromptSet(box=(0, 0, 9, 9))) == ()  # a box is no click


def test_a_correction_refines_the_object_where_it_is_and_is_placed_where_it_is_not():
    labels = np.zeros((4, 40, 60), np.int32)
    labels[1, 10:20, 10:30] = 3
    labels[1, 30:35, 40:50] = 1  # another object
    click = PromptSet((Click(45.0, 25.0),), box=(0.0, 0.0, 5.0, 5.0))  # its box is dropped
    refined, prior = correction(click, labels, 1, 3)
    assert np.array_equal(prior, labels[1] == 3)
    assert refined == PromptSet(click.clicks).refining(labels[1] == 3)
    placed, prior = correction(click, labels, 3, 3)
    assert prior is None and placed == PromptSet(click.clicks).placed(labels[1] == 3)
    assert correction(click, labels, 1, 7) == (PromptSet(click.clicks), None)  # nowhere
