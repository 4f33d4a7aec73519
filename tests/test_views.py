"""cnn.views: the rows behind the Train page's charts (SYNTHETIC training steps)."""
from collections import Counter

from cnn.views import live_step_rows, step_rows


def steps(n: int) -> list[dict]:
    return [{"step": i + 1, "loss": 2.3 / (i + 1), "batch_accuracy": i / n, "images_per_second": 1000.0}
            for i in range(n)]


def test_live_rows_keep_every_metric_and_at_most_500_points_each():
    rows = live_step_rows(steps(3000), "run")
    counts = Counter(r["metric"] for r in rows)
    assert set(counts) == {"training loss", "batch accuracy", "images/s"}
    assert all(250 <= c <= 500 for c in counts.values())
    accuracy = [r["value"] for r in rows if r["metric"] == "batch accuracy"]
    assert accuracy == sorted(accuracy) and accuracy[-1] > 0.5  # the smoothed curve, rising, not a constant


def test_a_short_run_is_sent_whole():
    assert live_step_rows(steps(40), "run") == step_rows(steps(40), "run")
    assert live_step_rows([], "run") == []


def test_the_app_icon_is_drawn_here_a_kernel_of_blue_and_red():
    from cnn.views import app_icon

    icon = app_icon(63)
    assert icon.shape == (63, 63, 3) and icon.dtype.name == "uint8"
    left, right = icon[31, 10], icon[31, 52]  # the middle row of a Sobel-x kernel: -1 ... +1
    assert left[2] == 255 and left[0] < 128 and right[0] == 255 and right[2] < 128
