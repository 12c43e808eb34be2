"""Line crossings by direction: margins against jitter, only on the drawn segment."""
import pytest

from pipeline.layout import CountLine
from pipeline.vision.lines import LineCounter

# a horizontal line across the middle, drawn left to right: its left side is the top of the image
LINE = CountLine(name="door", a=(0.2, 0.5), b=(0.8, 0.5))


def walk(counter, track, points):
    return [d for d in (counter.update(track, x, y) for x, y in points) if d]


def test_walking_up_across_the_line_is_in_and_down_is_out():
    c = LineCounter(LINE)
    assert walk(c, 1, [(0.5, 0.9), (0.5, 0.7), (0.5, 0.45), (0.5, 0.2)]) == ["in"]
    assert walk(c, 2, [(0.4, 0.1), (0.4, 0.6)]) == ["out"]


def test_standing_on_the_line_or_jittering_across_it_inside_the_margin_counts_nothing():
    c = LineCounter(LINE, margin=0.02)
    assert walk(c, 1, [(0.5, 0.6), (0.5, 0.49), (0.5, 0.51), (0.5, 0.495), (0.5, 0.505), (0.5, 0.6)]) == []


def test_passing_beside_the_segment_is_not_a_crossing_and_each_crossing_counts():
    c = LineCounter(LINE)
    assert walk(c, 1, [(0.95, 0.8), (0.95, 0.2)]) == []
    assert walk(c, 2, [(0.5, 0.8), (0.5, 0.2), (0.5, 0.8), (0.5, 0.2)]) == ["in", "out", "in"]
    c.forget(2)
    assert walk(c, 2, [(0.5, 0.8)]) == []  # a forgotten track starts afresh


def test_bad_lines_are_refused():
    with pytest.raises(ValueError):
        CountLine(a=(0.2, 0.5), b=(0.2, 0.5))
    with pytest.raises(ValueError):
        CountLine(a=(-0.1, 0.5), b=(0.8, 1.2))
