"""The figures shared by validation and the report."""


def test_a_zero_percent_bar_keeps_its_colour_and_interval():
    """A class nobody gets right (0%) is still drawn: a mark in its colour (tail orange) at 0 inside the axes, and
    its interval's error bar."""
    from matplotlib.colors import to_rgba

    from llavaction.utils.figures import accuracy_bars, pyplot

    figure = accuracy_bars(
        ["rare (3)", "common (40)"],
        [0.0, 50.0],
        xlabel="verb",
        colours=["#d95f02", "#1b9e77"],
        intervals=[(0.0, 20.0), (40.0, 60.0)],
    )
    axis = figure.axes[0]
    (marks,) = [c for c in axis.collections if all(line[0][1] == line[1][1] for line in c.get_segments())]
    assert [[tuple(end) for end in line] for line in marks.get_segments()] == [
        [(-0.4, 0.0), (0.4, 0.0)],
        [(0.6, 50.0), (1.4, 50.0)],
    ]
    assert tuple(marks.get_color()[0]) == to_rgba("#d95f02") and axis.get_ylim()[0] < 0
    pyplot().close(figure)
