"""Builds the near-duplicate benchmark of `mobilenet duplicates` (issue 6) from the shared photos.

For every photo of data/imagenet-sample and data/flowers/val it writes the original and four
variants, each a near-duplicate a user would want grouped with it:
  q50     JPEG re-encode at quality 50
  half    resized to 50% (Pillow BICUBIC), JPEG quality 90
  crop90  centre crop keeping 90% of width and height, JPEG quality 90
  bright  brightness x1.1 (PIL.ImageEnhance.Brightness), JPEG quality 90
Files are named <group>__<variant>.jpg; manifest.json maps each file to its group.
Nothing here is committed: the photos come from ../shared and may not enter the repository.

Run: python3 scripts/bench/make_duplicate_benchmark.py OUT_DIR   (needs Pillow; /opt/tfenv has 13.0.0)
"""
import json
import os
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT / os.environ.get("MOBILENET_SHARED_DIR", "../shared")).resolve()


def sources():
    for path in sorted((SHARED / "data/imagenet-sample").iterdir()):
        yield "in_" + path.stem, path
    for path in sorted((SHARED / "data/flowers/val").glob("*/*")):
        yield f"fl_{path.parent.name}_{path.stem}", path


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for group, path in sources():
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        w, h = image.size
        variants = {
            "q50": (image, 50),
            "half": (image.resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC), 90),
            "crop90": (image.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95))), 90),
            "bright": (ImageEnhance.Brightness(image).enhance(1.1), 90),
        }
        original = out / f"{group}__orig{path.suffix.lower()}"
        shutil.copyfile(path, original)
        manifest[original.name] = group
        for name, (variant, quality) in variants.items():
            target = out / f"{group}__{name}.jpg"
            variant.save(target, quality=quality)
            manifest[target.name] = group
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(manifest)} images in {len(set(manifest.values()))} groups to {out}")


if __name__ == "__main__":
    main()
