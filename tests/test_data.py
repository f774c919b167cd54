"""Data sets (scoresde/data.py): toy generators against their closed forms, digits, arrays, images.

Toy sets follow FFJORD's generators (Grathwohl et al. 2019, lib/toy_data.py) and sklearn's
make_moons / make_swiss_roll. Statistical checks use fixed seeds and 4-standard-error bands.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from scoresde.data import (
    TABULAR_DATASETS,
    TABULAR_MEANS,
    TABULAR_STDS,
    TABULAR_WEIGHTS,
    TOY_DATASETS,
    checkerboard,
    digits,
    eight_gaussians,
    load_array,
    load_image_folder,
    pinwheel,
    rings,
    swiss_roll,
    tabular_mixture,
    two_moons,
)

F64 = torch.float64
N = 20000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_equal_counts(counts: torch.Tensor, n: int) -> None:
    """Each of k equally likely categories holds n/k points within 4 binomial standard errors."""
    k = counts.numel()
    assert int(counts.sum()) == n
    se = math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert float((counts.double() - n / k).abs().max()) < 4 * se, counts


def _assert_mean(values: torch.Tensor, expected: float) -> None:
    """The sample mean is within 4 standard errors of the closed-form mean."""
    v = values.double()
    se = float(v.std()) / math.sqrt(v.numel())
    assert abs(float(v.mean()) - expected) < 4 * se, (float(v.mean()), expected, se)


def _assert_variance(values: torch.Tensor, expected: float) -> None:
    """The sample variance is within 4 standard errors, SE = sqrt((m4 - var^2) / n)."""
    v = values.double()
    c = v - v.mean()
    var, m4 = float(c.pow(2).mean()), float(c.pow(4).mean())
    se = math.sqrt((m4 - var**2) / v.numel())
    assert abs(var - expected) < 4 * se, (var, expected, se)


# --- every toy set ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_toy_sets_shape_dtype_and_seeding(name):
    make = TOY_DATASETS[name]
    x = make(1000, generator=_gen(0))
    assert x.shape == (1000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, make(1000, generator=_gen(0)))
    assert not torch.equal(x, make(1000, generator=_gen(1)))
    assert make(7).shape == (7, 2)  # the global generator works too


# --- the table with heterogeneous column scales -------------------------------------------------


def test_tabular_mixture_has_its_closed_form_column_moments():
    """Each column's mean sum_k w_k m_k and variance sum_k w_k (s_k^2 + m_k^2) - mean^2 (the
    three-component mixture, written out from the constants), within 4 standard errors; the
    column scales differ by more than 1e6, what the tabular preset's standardisation is for."""
    assert TABULAR_DATASETS["tabular_mixture"] is tabular_mixture
    x = tabular_mixture(N, generator=_gen(0))
    assert x.shape == (N, 5) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, tabular_mixture(N, generator=_gen(0)))
    assert not torch.equal(x, tabular_mixture(N, generator=_gen(1)))
    for j in range(5):
        mean = sum(w * m[j] for w, m in zip(TABULAR_WEIGHTS, TABULAR_MEANS, strict=True))
        second = sum(
            w * (s[j] ** 2 + m[j] ** 2)
            for w, m, s in zip(TABULAR_WEIGHTS, TABULAR_MEANS, TABULAR_STDS, strict=True)
        )
        _assert_mean(x[:, j], mean)
        _assert_variance(x[:, j], second - mean**2)
    std = x.double().std(0)
    assert float(std.max() / std.min()) > 1e6


# --- checkerboard ---------------------------------------------------------------------------------


def test_checkerboard_is_uniform_on_the_black_squares():
    """FFJORD: x1 ~ U(-2, 2), x2 in a square with floor(x1) + floor(x2) even; 8 squares of the 4x4
    board on [-2, 2]^2, each with probability 1/8, uniform inside."""
    x = checkerboard(N, generator=_gen(0)).double()
    assert float(x.min()) >= -2 and float(x.max()) <= 2
    cell = torch.floor(x).long()  # in {-2, -1, 0, 1}^2
    assert torch.all((cell[:, 0] + cell[:, 1]) % 2 == 0)
    index = (cell[:, 0] + 2) * 4 + (cell[:, 1] + 2)
    counts = torch.bincount(index, minlength=16)
    black = [i for i in range(16) if (i // 4 + i % 4) % 2 == 0]
    assert int(counts.sum() - counts[black].sum()) == 0
    _assert_equal_counts(counts[black], N)
    # uniform inside a square: the fractional parts are U(0, 1)
    frac = x - torch.floor(x)
    for j in range(2):
        _assert_mean(frac[:, j], 0.5)
        _assert_variance(frac[:, j], 1 / 12)


# --- eight Gaussians ------------------------------------------------------------------------------


def test_eight_gaussians_are_equal_clusters_on_a_circle():
    """Centres 2 (cos(k pi/4), sin(k pi/4)), std 0.1, weights 1/8. Neighbouring centres are 1.53
    apart, 7.7 std per coordinate, so nearest-centre assignment is exact in practice."""
    x = eight_gaussians(N, generator=_gen(1)).double()
    angle = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    k = torch.cdist(x, centres).argmin(1)
    _assert_equal_counts(torch.bincount(k, minlength=8), N)
    for j in range(8):
        residual = x[k == j] - centres[j]
        for c in range(2):
            _assert_mean(residual[:, c], 0.0)
            _assert_variance(residual[:, c], 0.1**2)


# --- rings ----------------------------------------------------------------------------------------

RADII = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=F64)


def test_rings_without_noise_lie_on_four_radii_uniform_in_angle():
    x = rings(N, generator=_gen(2), noise=0.0).double()
    r = x.norm(dim=1)
    k = (r[:, None] - RADII).abs().argmin(1)
    assert_close(r, RADII[k], rtol=0, atol=1e-6)
    _assert_equal_counts(torch.bincount(k, minlength=4), N)
    angle = torch.atan2(x[:, 1], x[:, 0])
    _assert_mean(torch.cos(angle), 0.0)
    _assert_mean(torch.sin(angle), 0.0)
    _assert_variance(angle, (2 * math.pi) ** 2 / 12)


def test_rings_noise_is_isotropic_gaussian_of_the_given_std():
    """For a point r u + n with n ~ N(0, s^2 I), E[|x|^2 - r^2] = 2 s^2 exactly (the cross term has
    mean 0). Boundaries between rings are 0.25 = 3.1 s away, so assignments are right but for
    ~0.2 % of the points, a bias well inside the 4-SE band (2 s^2 = 0.0128 is 8 SE from zero)."""
    s = 0.08
    x = rings(2 * N, generator=_gen(3), noise=s).double()
    r2 = x.pow(2).sum(1)
    k = (r2.sqrt()[:, None] - RADII).abs().argmin(1)
    _assert_equal_counts(torch.bincount(k, minlength=4), 2 * N)
    _assert_mean(r2 - RADII[k] ** 2, 2 * s**2)
    # without assignments, E|x|^2 = mean(r^2) + 2 s^2 for any s: at s = 0.5, 2 s^2 is 35 SE
    s = 0.5
    x = rings(N, generator=_gen(4), noise=s).double()
    _assert_mean(x.pow(2).sum(1), float(RADII.pow(2).mean()) + 2 * s**2)


# --- two moons ------------------------------------------------------------------------------------


def _moon_frame(x: torch.Tensor) -> torch.Tensor:
    """Undo the centring and scaling: back to sklearn's make_moons coordinates."""
    return x.double() / 2 + torch.tensor([0.5, 0.25], dtype=F64)


def test_two_moons_without_noise_lie_on_the_two_half_circles():
    """sklearn's make_moons: upper (cos a, sin a), lower (1 - cos a, 1/2 - sin a), a ~ U(0, pi)."""
    p = _moon_frame(two_moons(N, generator=_gen(4), noise=0.0))
    lower_centre = torch.tensor([1.0, 0.5], dtype=F64)
    on_upper = ((p.norm(dim=1) - 1).abs() < 1e-5) & (p[:, 1] >= -1e-6)
    on_lower = (((p - lower_centre).norm(dim=1) - 1).abs() < 1e-5) & (p[:, 1] <= 0.5 + 1e-6)
    assert torch.all(on_upper | on_lower)
    upper = on_upper & ~on_lower  # the two arcs cross at two points only
    _assert_equal_counts(torch.bincount(upper.long(), minlength=2), N)
    a = torch.atan2(p[upper, 1], p[upper, 0])  # U(0, pi)
    _assert_mean(a, math.pi / 2)
    _assert_variance(a, math.pi**2 / 12)
    b = torch.atan2(lower_centre[1] - p[~upper, 1], lower_centre[0] - p[~upper, 0])
    _assert_mean(b, math.pi / 2)


def test_two_moons_moments_match_closed_form():
    """Before scaling by 2: E x = (1/2, 1/4) (removed by centring), Var x1 = 3/4 + s^2,
    Var x2 = 9/16 - 1/pi + s^2, Cov = 1/8 - 1/pi; the scaling multiplies (co)variances by 4."""
    s = 0.1
    x = two_moons(N, generator=_gen(5), noise=s).double()
    _assert_mean(x[:, 0], 0.0)
    _assert_mean(x[:, 1], 0.0)
    _assert_variance(x[:, 0], 4 * (0.75 + s**2))
    _assert_variance(x[:, 1], 4 * (9 / 16 - 1 / math.pi + s**2))
    _assert_mean(x[:, 0] * x[:, 1], 4 * (1 / 8 - 1 / math.pi))  # E[xy] = Cov: the means are 0


# --- swiss roll -----------------------------------------------------------------------------------


def test_swiss_roll_without_noise_is_the_spiral():
    """5 x = t (cos t, sin t) with t ~ U(3 pi/2, 9 pi/2): radius = t and the angle is t mod 2 pi."""
    x = 5 * swiss_roll(N, generator=_gen(6), noise=0.0).double()
    t = x.norm(dim=1)
    lo, hi = 1.5 * math.pi, 4.5 * math.pi
    assert float(t.min()) >= lo - 1e-5 and float(t.max()) <= hi + 1e-5
    # the extremes of N uniforms are within (hi - lo) * 5 / N of the ends (probability 1 - e^-5)
    assert float(t.min()) < lo + (hi - lo) * 5 / N and float(t.max()) > hi - (hi - lo) * 5 / N
    assert_close(x / t[:, None], torch.stack([torch.cos(t), torch.sin(t)], 1), rtol=0, atol=1e-5)
    _assert_mean(t, 3 * math.pi)
    _assert_variance(t, (hi - lo) ** 2 / 12)


def test_swiss_roll_noise_adds_two_noise_variances_to_the_squared_radius():
    """E|5 x|^2 = E t^2 + 2 noise^2 with E t^2 = (hi^3 - lo^3) / (3 (hi - lo))."""
    noise = 3.0  # large enough to be resolved: 2 noise^2 = 18 is ~15 SE
    x = 5 * swiss_roll(N, generator=_gen(7), noise=noise).double()
    lo, hi = 1.5 * math.pi, 4.5 * math.pi
    _assert_mean(x.pow(2).sum(1), (hi**3 - lo**3) / (3 * (hi - lo)) + 2 * noise**2)
    default = 5 * swiss_roll(N, generator=_gen(8)).double()
    _assert_mean(default.pow(2).sum(1), (hi**3 - lo**3) / (3 * (hi - lo)) + 2 * 0.5**2)


# --- pinwheel -------------------------------------------------------------------------------------


def test_pinwheel_has_five_equal_spiral_arms():
    """x / 2 = R(phi) f, f = (f0, f1) ~ N((1, 0), diag(0.3^2, 0.05^2)), phi = 2 pi k / 5 +
    0.25 exp(f0) with k uniform on 5 arms. So |x / 2|^2 = |f|^2 has mean 1 + 0.09 + 0.0025, and
    the angle minus 0.25 exp(|x/2|) is 2 pi k / 5 up to atan(f1/f0) (std ~0.05)."""
    x = pinwheel(N, generator=_gen(9)).double() / 2
    r2 = x.pow(2).sum(1)
    _assert_mean(r2, 1 + 0.3**2 + 0.05**2)
    unwound = torch.atan2(x[:, 1], x[:, 0]) - 0.25 * torch.exp(r2.sqrt())
    arm = torch.remainder(torch.round(unwound / (2 * math.pi / 5)), 5).long()
    _assert_equal_counts(torch.bincount(arm, minlength=5), N)
    offset = torch.remainder(unwound + math.pi / 5, 2 * math.pi / 5) - math.pi / 5
    assert float(offset.abs().median()) < 0.06  # 0.67 * 0.05 = 0.034 for atan(f1/f0) alone
    assert float((offset.abs() > 0.3).double().mean()) < 0.01


# --- digits ---------------------------------------------------------------------------------------


def test_digits_images_and_labels():
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = digits(return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    ref = datasets.load_digits()
    expected = torch.from_numpy(ref.images).reshape(-1, 1, 8, 8) / 8 - 1  # grey 0..16 -> [-1, 1]
    assert_close(x.double(), expected, rtol=0, atol=1e-7)
    assert y.shape == (1797,) and y.dtype == torch.long
    assert torch.equal(torch.unique(y), torch.arange(10))
    assert torch.equal(y, torch.from_numpy(ref.target).long())
    assert torch.equal(digits(), x)


# --- load_array -----------------------------------------------------------------------------------


def test_load_array_round_trips_npy_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3)).astype(np.float64)
    b = rng.integers(0, 9, size=(4, 2, 2))
    np.save(tmp_path / "a.npy", a)
    out = load_array(tmp_path / "a.npy")
    assert out.dtype == torch.float32 and out.shape == (5, 3)
    assert_close(out, torch.from_numpy(a).float(), rtol=0, atol=0)
    np.savez(tmp_path / "one.npz", data=a)
    assert_close(load_array(str(tmp_path / "one.npz")), torch.from_numpy(a).float())
    np.savez(tmp_path / "two.npz", a=a, b=b)
    assert_close(load_array(tmp_path / "two.npz", key="b"), torch.from_numpy(b).float())
    with pytest.raises(ValueError, match="key="):
        load_array(tmp_path / "two.npz")


def test_load_array_refuses_pickles_vectors_and_other_files(tmp_path):
    obj = np.empty((2, 2), dtype=object)
    obj[:] = [[{"a": 1}, None], [1, "x"]]
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(ValueError):
        load_array(tmp_path / "obj.npy")
    np.savez(tmp_path / "obj.npz", obj=obj)
    with pytest.raises(ValueError):
        load_array(tmp_path / "obj.npz")
    np.save(tmp_path / "vec.npy", np.arange(5.0))
    with pytest.raises(ValueError, match="shape"):
        load_array(tmp_path / "vec.npy")
    (tmp_path / "a.csv").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=".npy or .npz"):
        load_array(tmp_path / "a.csv")


# --- load_image_folder ----------------------------------------------------------------------------


def _write_images(folder, shapes_and_modes):
    from PIL import Image

    rng = np.random.default_rng(1)
    arrays = []
    folder.mkdir(exist_ok=True)
    for i, (h, w, mode) in enumerate(shapes_and_modes):
        shape = (h, w) if mode == "L" else (h, w, 3)
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(arr, mode=mode).save(folder / f"img{i}.png")
        arrays.append(arr)
    return arrays


def test_load_image_folder_values_and_channels(tmp_path):
    pytest.importorskip("PIL")
    gray, rgb = _write_images(tmp_path / "imgs", [(4, 6, "L"), (4, 6, "RGB")])
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    x = load_image_folder(tmp_path / "imgs")
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    to_unit = lambda a: torch.from_numpy(a.astype(np.float64)) / 127.5 - 1  # noqa: E731
    # sorted by name: img0 (grayscale, replicated to RGB), then img1 (RGB, channels first)
    assert_close(x[0].double(), to_unit(gray).expand(3, 4, 6), rtol=0, atol=1e-6)
    assert_close(x[1].double(), to_unit(rgb).permute(2, 0, 1), rtol=0, atol=1e-6)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    # one channel: RGB -> L by ITU-R 601-2 luma, L = (299 R + 587 G + 114 B) / 1000
    x1 = load_image_folder(tmp_path / "imgs", channels=1)
    assert x1.shape == (2, 1, 4, 6)
    assert_close(x1[0, 0].double(), to_unit(gray), rtol=0, atol=1e-6)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert float((x1[1, 0].double() - to_unit(luma)).abs().max()) <= 1 / 127.5 + 1e-6


def test_load_image_folder_resizes_and_needs_size_for_mixed_shapes(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    folder = tmp_path / "mixed"
    _write_images(folder, [(4, 6, "RGB"), (5, 5, "L")])
    with pytest.raises(ValueError, match="size="):
        load_image_folder(folder)
    x = load_image_folder(folder, size=3)
    assert x.shape == (2, 3, 3, 3)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    # a constant image stays constant under bilinear resizing
    Image.fromarray(np.full((7, 9, 3), 51, dtype=np.uint8)).save(folder / "z_const.png")
    x = load_image_folder(folder, size=4)
    assert_close(x[2], torch.full((3, 4, 4), 51 / 127.5 - 1), rtol=0, atol=1e-6)


def test_load_image_folder_resizes_bilinearly(tmp_path):
    """A 1 x 2 image (0, 255) upsampled to 4 wide: output pixel centres sit at source positions
    -0.25, 0.25, 0.75, 1.25 (clamped to [0, 1]), so bilinear gives 0, 63.75, 191.25, 255, which
    PIL rounds to 0, 64, 191, 255 (nearest-neighbour would give 0, 0, 255, 255)."""
    pytest.importorskip("PIL")
    from PIL import Image

    Image.fromarray(np.array([[0, 255]], dtype=np.uint8), mode="L").save(tmp_path / "ramp.png")
    x = load_image_folder(tmp_path, size=4, channels=1)
    row = torch.tensor([0.0, 64.0, 191.0, 255.0]) / 127.5 - 1
    assert_close(x, row.expand(1, 1, 4, 4), rtol=0, atol=1e-6)


def test_load_image_folder_rejects_an_empty_folder(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match="no .png"):
        load_image_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("still no images")
    with pytest.raises(ValueError, match="no .png"):
        load_image_folder(tmp_path)


def test_load_image_folder_rejects_unsupported_channels(tmp_path):
    pytest.importorskip("PIL")
    _write_images(tmp_path / "imgs", [(4, 4, "RGB")])
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path / "imgs", channels=2)
