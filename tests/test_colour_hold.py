"""Colour hold (mien.guidance.colour_hold): an edit's uniform colour change over the redrawn face is taken out, its
local change is not."""

import pytest
import torch

from mien.errors import MienError
from mien.guidance.colour_hold import colour_hold, colour_projection
from mien.sampling import flow_times, sample_flowedit
from mien.settings import GenerationSettings


def edit(change: torch.Tensor, region: torch.Tensor, strength: float | None, until: float = 1.0) -> torch.Tensor:
    """A FlowEdit of a random photo latent whose target moves it by ``change`` inside ``region`` (the rest kept)."""
    photo = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def velocity(x, t):  # v_tar - v_src = -change at every step: z ends at photo + change
        return torch.cat([torch.zeros_like(photo), -change.expand_as(photo)])

    correct = None if strength is None else colour_hold(photo, region, strength, until)
    noise = lambda k: torch.zeros_like(photo)  # noqa: E731
    return sample_flowedit(velocity, photo, flow_times(6, 1.0), noise, keep=1 - region, correct=correct) - photo


def test_the_uniform_change_is_held_and_a_local_one_survives():
    region = torch.zeros(1, 1, 8, 8)
    region[..., 1:7, 1:7] = 1
    offset = torch.tensor([0.5, -0.3, 0.2]).reshape(1, 3, 1, 1)
    bump = torch.zeros(1, 3, 8, 8)
    bump[..., 2:4, 2:4] = 1.0  # a local change: 4 of the 36 redrawn cells
    change = (offset + bump) * region

    plain = edit(change, region, None)
    torch.testing.assert_close(plain, change, atol=1e-5, rtol=0)

    held = edit(change, region, 1.0)
    torch.testing.assert_close(held, bump * region, atol=1e-5, rtol=0)  # the colour is gone, the bump whole
    assert held[..., region[0, 0] == 0].abs().max() == 0  # the kept region is not touched

    torch.testing.assert_close(edit(change, region, 1.0, until=0.1), plain)  # no step at t <= 0.1: not held

    half = edit(change, region, 0.5)
    still = half[..., 5, 5].flatten()  # a cell the bump does not reach
    assert (still.abs() < offset.flatten().abs()).all() and (still * offset.flatten() > 0).all()


def test_the_colour_basis_takes_out_only_what_changes_the_decoded_colour():
    """With a linear decoder (RGB = W z, upsampled), the projection keeps W's row space: an offset the decoder maps to
    no colour (texture, for a real decoder) survives the hold, one it maps to a colour is taken out."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 5, generator=g)

    def decode(z):
        return torch.nn.functional.interpolate(torch.einsum("rc,bchw->brhw", w, z), scale_factor=2)

    photo = torch.randn(1, 5, 8, 8, generator=g)
    region = torch.zeros(1, 1, 8, 8)
    region[..., 1:7, 1:7] = 1
    projection = colour_projection(decode, photo, region)
    colour = w.T @ torch.tensor([0.4, -0.2, 0.3])  # an offset in W's row space
    texture = torch.linalg.svd(w).Vh[3:].T @ torch.tensor([0.5, -0.7])  # one W maps to nothing
    for offset, kept in ((colour, 0.0), (texture, 1.0)):
        z = photo + offset.reshape(1, 5, 1, 1) * region
        held = colour_hold(photo, region, 1.0, projection=projection)(z, 0.5, 0.4) - photo
        torch.testing.assert_close(held[0, :, 3, 3], kept * offset, atol=1e-4, rtol=0)


def test_colour_hold_is_a_flowedit_setting_from_0_to_1():
    assert GenerationSettings().colour_hold == 0.0
    with pytest.raises(MienError, match="--colour-hold"):
        GenerationSettings(colour_hold=1.5)
    with pytest.raises(MienError, match="--colour-hold"):
        GenerationSettings(method="sdedit", colour_hold=0.5)
    with pytest.raises(MienError, match="--colour-hold-basis"):
        GenerationSettings(colour_hold=1.0, colour_hold_basis="lab")


def test_a_held_edit_keeps_the_photos_colour_over_the_redrawn_cells():
    """On a tiny random pipeline (moved by blendshape guidance at every step, as its expression stream starts at zero):
    with colour hold the per-channel median of the edit's change from the photo's latent over the cells it redraws is
    a fifth of what it is without, or less, and the kept cells stay the photo's (with the colour basis too)."""
    from conftest import tiny_aligned, tiny_components_pipeline

    from mien.cli.analyze import example_path
    from mien.expression.targets import ExpressionRequest
    from mien.io.image import load_rgb
    from mien.regions import edit_region

    pipe = tiny_components_pipeline()
    try:
        ident = pipe.identity_input(tiny_aligned(load_rgb(example_path())))
        request = ExpressionRequest(like=ident.blendshapes, aus={"AU26": 4.0})  # the photo's own, jaw dropped
        kw = dict(steps=4, recogniser_guidance=0.0, blendshape_guidance=1.0, blendshape_guidance_until=1.0)
        runs = {h: pipe(ident, request, GenerationSettings(colour_hold=h, **kw), n=1, seed=3) for h in (0.0, 1.0)}
        basis = GenerationSettings(colour_hold=1.0, colour_hold_basis="colour", **kw)
        colour = pipe(ident, request, basis, n=1, seed=3)
        size, box = pipe.model.backbone.latent_shape[1], pipe.model.backbone.face_box
    finally:
        pipe.close()
    photo = pipe.model.normalize(ident.latent[None])
    region = edit_region("background", size=size, box=box)[0, 0]
    cells = region > 0.5
    medians = {h: (pipe.model.normalize(g.latents) - photo)[0][:, cells].median(dim=1).values for h, g in runs.items()}
    # (not exactly zero: the soft edge's cells, redrawn by their weight, lose that share of the offset only)
    assert medians[0.0].abs().mean() > 0.02 and medians[1.0].abs().mean() < 0.2 * medians[0.0].abs().mean()
    kept = region == 0
    for g in (runs[1.0], colour):
        assert (g.latents[0] - ident.latent)[:, kept].abs().max() < 1e-4
    assert (colour.latents - runs[0.0].latents)[0][:, cells].abs().max() > 1e-3  # the colour basis moves it too
