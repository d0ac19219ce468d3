"""Fitting images: the fit itself, image loading and its errors, and `equilibria fit-image`."""

import json

import numpy as np
import pytest
import torch

from equilibria.cli import main
from equilibria.inr import FitSettings, ImageError, ImageFit, fit, load_image, pixel_grid, square
from equilibria.inr.image import Image, psnr, read_image, sample_image
from equilibria.training.checkpoint import load_checkpoint

pytest.importorskip("sklearn")
PIL = pytest.importorskip("PIL.Image")

TINY = dict(size=32, resize=True, steps=40, width=32, frequencies=16, scale=3.0, lr=1e-2)


@pytest.fixture(autouse=True)
def one_thread():
    """Full-batch steps on a few hundred pixels: threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photo():
    return square(load_image(), 32, resize=True)


def write_png(path, height=20, width=30):
    rng = np.random.default_rng(0)
    PIL.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_a_tiny_fit_raises_psnr_and_reuse_saves_evaluations(photo):
    reused = fit(ImageFit(FitSettings(**TINY), photo))
    assert reused.status == "finished" and reused.steps == 40
    assert reused.history[0]["psnr"] < 5 and reused.psnr > 10
    assert reused.reconstruction.shape == (32, 32, 3)
    cold = fit(ImageFit(FitSettings(**TINY, reuse=False), photo))
    late = slice(10, None)
    warm_nfe = np.mean([r["forward_nfe"] for r in reused.history[late]])
    cold_nfe = np.mean([r["forward_nfe"] for r in cold.history[late]])
    assert warm_nfe * 2 <= cold_nfe, (warm_nfe, cold_nfe)
    # the same weights: reuse only changes where each solve starts
    assert reused.psnr == pytest.approx(cold.psnr, abs=0.05)


def test_the_explicit_baseline_fits_with_the_same_parameter_count(photo):
    deq = ImageFit(FitSettings(**TINY), photo)
    explicit = ImageFit(FitSettings(**TINY, explicit=True), photo)
    assert abs(explicit.parameters - deq.parameters) <= 0.02 * deq.parameters
    result = fit(explicit)
    assert result.psnr > 10 and "forward_nfe" not in result.history[-1]


def test_a_fit_can_be_stopped_after_any_step(photo):
    result = fit(ImageFit(FitSettings(**TINY), photo), stop=lambda: True)
    assert result.status == "interrupted" and result.steps == 1


def test_a_time_budget_ends_the_fit(photo):
    ticks = iter(range(1000))
    settings = FitSettings(**{**TINY, "seconds": 3.0})
    result = fit(ImageFit(settings, photo), clock=lambda: float(next(ticks)))
    assert result.steps == 3 and result.seconds == 3.0


def test_pixel_grid_and_psnr():
    grid = pixel_grid(2, 4)
    assert grid.shape == (8, 2)
    torch.testing.assert_close(grid[0], torch.tensor([-0.75, -0.5]))
    torch.testing.assert_close(grid[-1], torch.tensor([0.75, 0.5]))
    target = torch.full((4, 4, 3), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)
    assert psnr(target, target) == float("inf")


def test_images_are_read_as_rgb_and_cropped_or_resized(tmp_path):
    image = read_image(write_png(tmp_path / "noise.png"))
    assert image.size == (20, 30) and image.pixels.dtype == torch.float32
    assert float(image.pixels.min()) >= 0 and float(image.pixels.max()) <= 1
    crop = square(image, 16)
    torch.testing.assert_close(crop.pixels, image.pixels[2:18, 7:23])
    assert square(image, 8, resize=True).size == (8, 8)
    assert square(image, 40, resize=True).size == (40, 40)
    grey = Image(torch.rand(5, 5, 3), "x")
    assert square(grey, 5).size == (5, 5)
    assert sample_image("china").size == (427, 640)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing.png", "does not exist"),
        (lambda tmp: tmp, "is a folder"),
        (
            lambda tmp: (tmp / "notes.png").write_text("not an image") and tmp / "notes.png",
            "is not a readable image",
        ),
    ],
)
def test_unusable_image_paths_are_clear_errors(tmp_path, make, message):
    with pytest.raises(ImageError, match=message):
        load_image(make(tmp_path))


def test_a_crop_larger_than_the_image_is_a_clear_error(tmp_path):
    image = read_image(write_png(tmp_path / "small.png"))
    with pytest.raises(ImageError, match="too small for a 64x64 crop; use a size of at most 20"):
        square(image, 64)
    with pytest.raises(ImageError, match="size must be an integer >= 2"):
        square(image, 1)


def test_camera_needs_scikit_image_or_is_its_photo():
    try:
        import skimage  # noqa: F401
    except ImportError:
        with pytest.raises(ImageError, match="pip install scikit-image"):
            sample_image("camera")
    else:
        assert sample_image("camera").size == (512, 512)
    with pytest.raises(ImageError, match="choose one of china, camera"):
        sample_image("lena")


def test_settings_are_checked():
    with pytest.raises(ValueError, match="lr must be > 0"):
        FitSettings(lr=0.0)
    with pytest.raises(ValueError, match="solver='secant' is not valid; choose one of"):
        FitSettings(solver="secant")
    with pytest.raises(ValueError, match="contraction must be < 1"):
        FitSettings(contraction=1.0)


# ---------------------------------------------------------------- the command line


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_image_writes_every_output(tmp_path, capsys):
    image = write_png(tmp_path / "noise.png", 24, 24)
    out = tmp_path / "fit"
    common = ("--size", 16, "--steps", 3, "--width", 16, "--frequencies", 8, "--no-progress")
    code, stdout, _ = run_cli(capsys, "fit-image", image, *common, "--out", out)
    assert code == 0, stdout
    names = ("reconstruction.png", "error_map.png", "psnr_curve.png", "summary.json")
    for name in (*names, "checkpoint.pt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["model"] == "deq" and summary["size"] == [16, 16]
    assert summary["mean_forward_nfe"] >= 1 and summary["final_solve_nfe"]["cold"] >= 1
    assert summary["psnr"] > 0 and "PSNR" in stdout and "forward evaluations per step" in stdout
    with PIL.open(out / "reconstruction.png") as written:
        assert written.size == (16, 16) and written.mode == "RGB"
    checkpoint = load_checkpoint(out)
    assert checkpoint["progress"].global_step == 3 and checkpoint["progress"].finished
    assert checkpoint["config"]["width"] == 16

    code, _, err = run_cli(capsys, "fit-image", image, *common, "--out", out)
    assert code == 2 and "already holds a fit" in err
    code, stdout, _ = run_cli(
        capsys, "fit-image", image, *common, "--explicit", "--out", tmp_path / "explicit"
    )
    summary = json.loads((tmp_path / "explicit" / "summary.json").read_text())
    assert code == 0 and summary["model"] == "explicit" and "mean_forward_nfe" not in summary


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing.png"], "does not exist"),
        (["notes.txt"], "is not a readable image"),
        (["--size", "1000"], "too small for a 1000x1000 crop"),
    ],
)
def test_fit_image_user_mistakes_end_in_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "fit-image", *argv, "--steps", 1, "--out", tmp_path / "o")
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--size", "1"], ["--size", "big"], ["--lr", "-1"]])
def test_fit_image_rejects_bad_numbers(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        main(["fit-image", *argv])
    assert stopped.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_a_fit_by_time_ends_its_bar_at_its_total_without_a_warning():
    import warnings

    from equilibria.cli.fit_image import FitProgress
    from equilibria.inr.settings import FitSettings

    progress = FitProgress(FitSettings(seconds=1.0), enabled=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm warns when a bar passes its total
        for seconds in (0.4, 0.9, 1.3):  # the last step ends past the budget
            progress({"psnr": 20.0, "seconds": seconds})
        assert progress.bar.n == progress.bar.total == 1.0
        progress.close()
