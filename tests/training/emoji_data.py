"""A small synthetic folder in the emoji data's layout (emoji.json, vendor PNG folders, Iconify
SVG tarballs): coloured shapes, one class per (colour, shape), drawn four ways."""

import io
import json
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = ["ff0000", "00aa00", "0000ff", "ff9900", "aa00aa", "00aaaa", "777777", "000000"]


def add_json(archive: tarfile.TarFile, name: str, value: object) -> None:
    data = json.dumps(value).encode()
    info = tarfile.TarInfo(f"package/{name}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def iconify_set(path: Path, icons: dict, chars: dict | None) -> None:
    """An ``npm pack`` tarball of an Iconify set: ``icons`` is icons.json's body."""
    with tarfile.open(path, "w:gz") as archive:
        add_json(archive, "icons.json", {"prefix": path.stem, "width": 16, "height": 16, **icons})
        if chars is not None:
            add_json(archive, "chars.json", chars)


def shape_png(colour: str, index: int, size: int, outline: bool) -> bytes:
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    box = (size // 8, size // 8, size - size // 8, size - size // 8)
    fill = None if outline else f"#{colour}"
    (draw.ellipse if index % 2 else draw.rectangle)(box, fill=fill, outline=f"#{colour}", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shape_svg(colour: str, index: int) -> dict:
    if index % 2:
        return {"body": f'<circle cx="8" cy="8" r="6" fill="#{colour}"/>'}
    return {"body": f'<rect x="2" y="2" width="12" height="12" fill="#{colour}"/>'}


def write_emoji_folder(
    root: Path, subcategories: list[str], per_subcategory: int = 2, icon_sets: int = 2
) -> Path:
    """Emoji ``1f300 + i`` in ``subcategories`` (``per_subcategory`` each), drawn by two PNG
    vendors and ``icon_sets`` Iconify sets (the first joined by code point, the others by
    icon name)."""
    (root / "iconify").mkdir(parents=True)
    catalogue, icons, chars = [], {}, {}
    for i in range(len(subcategories) * per_subcategory):
        code, name = f"{0x1F300 + i:x}", f"shape-{i}"
        colour, sub = COLOURS[i % len(COLOURS)], subcategories[i // per_subcategory]
        catalogue.append({"unified": code.upper(), "short_name": name, "subcategory": sub})
        for vendor, size, outline in (("google", 32, False), ("twitter", 24, True)):
            (root / vendor).mkdir(exist_ok=True)
            (root / vendor / f"{code}.png").write_bytes(shape_png(colour, i, size, outline))
        icons[name], chars[code] = shape_svg(colour, i), name
    (root / "emoji.json").write_text(json.dumps(catalogue))
    for index in range(icon_sets):
        iconify_set(
            root / "iconify" / f"set{index}.tgz", {"icons": icons}, None if index else chars
        )
    return root
