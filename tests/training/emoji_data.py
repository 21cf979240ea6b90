"""A small synthetic folder in the emoji data's layout (emoji.json, vendor PNG folders, Iconify
SVG tarballs): coloured shapes, one class per (colour, shape), drawn four ways; and the same
folder as the npm registry would serve it."""

import io
import json
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

from protonet.files import file_hexdigest
from training.emoji_download import LICENCE, Tarball

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
    root: Path,
    subcategories: list[str],
    per_subcategory: int = 2,
    icon_sets: int = 2,
    png_sizes: tuple[int, int] = (32, 24),
) -> Path:
    """Emoji ``1f300 + i`` in ``subcategories`` (``per_subcategory`` each), drawn by two PNG
    vendors (``png_sizes`` pixels) and ``icon_sets`` Iconify sets (the first joined by code
    point, the others by icon name)."""
    (root / "iconify").mkdir(parents=True)
    catalogue, icons, chars = [], {}, {}
    for i in range(len(subcategories) * per_subcategory):
        code, name = f"{0x1F300 + i:x}", f"shape-{i}"
        colour, sub = COLOURS[i % len(COLOURS)], subcategories[i // per_subcategory]
        catalogue.append({"unified": code.upper(), "short_name": name, "subcategory": sub})
        for vendor, size, outline in zip(
            ("google", "twitter"), png_sizes, (False, True), strict=True
        ):
            (root / vendor).mkdir(exist_ok=True)
            (root / vendor / f"{code}.png").write_bytes(shape_png(colour, i, size, outline))
        icons[name], chars[code] = shape_svg(colour, i), name
    (root / "emoji.json").write_text(json.dumps(catalogue))
    (root / LICENCE).write_text("The MIT License (MIT)\n")
    for index in range(icon_sets):
        iconify_set(
            root / "iconify" / f"set{index}.tgz", {"icons": icons}, None if index else chars
        )
    return root


def publish(registry: Path, package: str, version: str, content: bytes) -> Tarball:
    """``content`` served as ``package@version`` by a registry whose root is ``registry``
    (npm's scheme: ``<package>/-/<name>-<version>.tgz``), pinned by its sha256."""
    path = registry / package / "-" / f"{package.split('/')[-1]}-{version}.tgz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return Tarball(package, version, file_hexdigest(path))


def vendor_tarball(root: Path, style: str) -> bytes:
    """An ``emoji-datasource-<style>`` tarball of the folder ``root``: its PNGs at 64 px
    (``img/<style>/64/``) and the catalogue with its licence; also what unpacking must skip,
    another size and a name that climbs out of the folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(root / "emoji.json", "package/emoji.json")
        archive.add(root / LICENCE, "package/LICENSE")
        pngs = sorted((root / style).glob("*.png"))
        for png in pngs:
            archive.add(png, f"package/img/{style}/64/{png.name}")
        archive.add(pngs[0], f"package/img/{style}/32/{pngs[0].name}")
        archive.add(pngs[0], f"package/img/{style}/64/../../../../escaped.png")
    return buffer.getvalue()


def publish_emoji(root: Path, registry: Path) -> tuple[dict[str, Tarball], tuple[Tarball, ...]]:
    """The emoji folder ``root`` published under ``registry``: the vendor tarballs and the
    Iconify sets (``iconify/setN.tgz`` as ``@iconify-json/setN`` 1.0.0), pinned as
    training/emoji_download.py's ``VENDORS`` and ``ICONIFY`` are."""
    vendors = {
        style: publish(registry, f"emoji-datasource-{style}", "16.0.0", vendor_tarball(root, style))
        for style in ("google", "twitter")
    }
    iconify = tuple(
        publish(registry, f"@iconify-json/{path.stem}", "1.0.0", path.read_bytes())
        for path in sorted((root / "iconify").glob("*.tgz"))
    )
    return vendors, iconify
