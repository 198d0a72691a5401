"""Make a trained latent reader the one mien ships: one command.

    python scripts/ship_latent_reader.py TRAINED.safetensors [--storage int8] [--blendshapes]

Loads ``TRAINED`` (any reader ``scripts/train_latent_reader.py`` or the GPU call writes: float16 or int8, the
config in its metadata), saves it in ``--storage`` (int8 by default: 8-bit weights with a float32 scale per output
channel, half a float16 file's size; :meth:`mien.models.latent_reader.LatentReader.save`) as the built-in model
folder's ``latent_reader.safetensors``, and puts its SHA256 where the shipped file's is named: the folder's
``SHA256SUMS`` line, ``mien.models.latent_reader.WEIGHTS`` and the model card (``README.md``). Prints the old and
new SHA256, the size, and how far the shipped weights' embeddings and gradients are from ``TRAINED``'s on random
latents (a check of the storage, not of the reader: docs/performance.md, "A hybrid critic", measures readers).
Saving the same reader twice gives the same tensors but may give another SHA256: safetensors writes the metadata's
keys in no fixed order.
The figures in docs/performance.md and the model card that were measured with the old reader stay to be redone.
``--blendshapes`` ships a blendshape reader (52 outputs) as ``blendshape_reader.safetensors`` instead, its SHA256 in
``mien.models.latent_reader.BLENDSHAPE_WEIGHTS``, the same folder's ``SHA256SUMS`` and the model card; its check
compares the blendshapes and the gradients of a closeness to a random target.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMING = [ROOT / "src/mien/models/latent_reader.py", ROOT / "src/mien/resources/model/README.md"]


def storage_check(trained, shipped) -> dict:
    """Cosines between the two readers' embeddings and gradients of a cosine (a blendshape reader: of minus the
    squared distance to a random target), on 64 random latents."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 32, 16, 16, generator=g)
    dim = trained.config.embedding
    target = F.normalize(torch.randn(1, dim, generator=g), dim=1) if trained.config.unit else torch.rand(1, dim,
                                                                                                         generator=g)
    out = []
    for reader in (trained, shipped):
        x = z.clone().requires_grad_(True)
        e = reader(x)
        score = (e * target).sum() if trained.config.unit else -(e - target).pow(2).sum()
        (grad,) = torch.autograd.grad(score, x)
        out.append((e.detach(), grad.flatten(1)))
    emb = F.cosine_similarity(out[0][0], out[1][0], dim=1)
    grad = F.cosine_similarity(out[0][1], out[1][1], dim=1)
    return {"embedding_cosine_min": round(emb.min().item(), 5), "gradient_cosine_min": round(grad.min().item(), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trained", type=Path, help="the trained reader's .safetensors")
    ap.add_argument("--storage", default="int8", choices=("int8", "float16"), help="int8 (shipped) or float16")
    ap.add_argument("--blendshapes", action="store_true", help="a blendshape reader: blendshape_reader.safetensors")
    args = ap.parse_args()
    if not args.trained.is_file():
        from mien.errors import MienError

        raise MienError(f"{args.trained}: no such file; give the trained reader's .safetensors "
                        "(scripts/train_latent_reader.py --out)")
    from mien.checksums import read_sums, sha256_of, sidecar
    from mien.models import latent_reader as LR

    kind = "blendshape" if args.blendshapes else "recogniser"
    packaged = LR.BLENDSHAPE_PACKAGED if args.blendshapes else LR.PACKAGED
    target = LR.packaged_path(kind)
    sums = target.with_name("SHA256SUMS")
    old = read_sums(sums).get(packaged) or (LR.BLENDSHAPE_WEIGHTS.sha256 if args.blendshapes else None)
    trained = LR.LatentReader.from_weights(args.trained)
    if bool(trained.config.unit) == args.blendshapes:
        from mien.errors import MienError

        raise MienError(f"{args.trained}: a {'recogniser' if trained.config.unit else 'blendshape'} reader; "
                        f"{'drop' if args.blendshapes else 'add'} --blendshapes")
    new = trained.save(target, storage=args.storage)
    sidecar(target).unlink()  # the model folder's SHA256SUMS records it instead
    lines = [line for line in sums.read_text().splitlines() if not line.endswith(f"  {packaged}")]
    sums.write_text("".join(f"{line}\n" for line in lines) + f"{new}  {packaged}\n")
    if old and old != new:
        for path in NAMING:
            path.write_text(path.read_text().replace(old, new))
    check = storage_check(trained, LR.LatentReader.from_weights(target))
    print(f"{target}: {target.stat().st_size / 1e6:.2f} MB, {args.storage}, SHA256 {new} (was {old}); "
          f"against {args.trained.name}: {check}; SHA256SUMS {'ok' if sha256_of(target) == new else 'WRONG'}")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
