"""What the notebook widgets share: layouts a person can use at 1024 px, pictures shown pixel for pixel,
image tiles with captions, and a busy state (ipywidgets 7.7 and 8: only APIs both versions have).

Pictures are enlarged by an integer factor with nearest-neighbour in the PNG itself and shown at
the PNG's own size (the browser neither stretches nor blurs them; CSS ``image-rendering: pixelated``
keeps them sharp under page zoom). Sliders get a row of their own and a track of about 420 px.
"""

from __future__ import annotations

import io
import struct
from contextlib import contextmanager

import torch

from labkit.images import encode_png, enlarge


def figure_to_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


# ---- layout: controls with a usable track, pictures at their own pixel size -------------------------
CONTROL_WIDTH = "600px"  # a slider on its own row: a track of about 420 px beside its label and readout
DESCRIPTION_WIDTH = "90px"
PIXELATED = "labkit-pixelated"  # CSS class: upscaled pixels stay square when the browser rescales
STALE = "labkit-stale"  # CSS class: pictures greyed while new ones are sampled
STYLE = (
    f"<style>img.{PIXELATED} {{image-rendering: crisp-edges; image-rendering: pixelated;}}"
    f" .{STALE} {{opacity: 0.35;}}</style>"
)


def control_layout(widgets):
    return dict(layout=widgets.Layout(width=CONTROL_WIDTH, max_width="100%"), style={"description_width": DESCRIPTION_WIDTH})


def style_widget(widgets):
    """An HTML widget holding the widgets' CSS (pixelated pictures, greyed stale ones)."""
    return widgets.HTML(STYLE, layout=widgets.Layout(height="0px", margin="0px"))


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels of PNG bytes, read from the IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def new_image_widget(widgets):
    image = widgets.Image(format="png", layout=widgets.Layout(width="0px", height="0px"))
    image.add_class(PIXELATED)
    return image


def show_png(image_widget, png: bytes) -> bytes:
    """Show ``png`` in ``image_widget`` at its own pixel size (never stretched or squeezed by the page)."""
    width, height = png_size(png)
    image_widget.value = png
    image_widget.layout.width, image_widget.layout.height = f"{width}px", f"{height}px"
    image_widget.layout.min_width = f"{width}px"  # a flex row must not shrink it
    return png


@contextmanager
def busy(controls, status, text: str, steps: int = 0):
    """Disable ``controls`` and show ``text`` in the HTML ``status`` while the block runs (controls are
    restored on error too). Yields ``on_step``: call it after each of ``steps`` steps to count them there."""
    previous = [control.disabled for control in controls]
    for control in controls:
        control.disabled = True
    status.value = text
    done = [0]

    def on_step() -> None:
        done[0] += 1
        status.value = f"{text} step {done[0]}/{steps}" if steps else text

    try:
        yield on_step
    finally:
        for control, disabled in zip(controls, previous):
            control.disabled = disabled


# ---- pictures -------------------------------------------------------------------------------------
def picture_png(image: torch.Tensor) -> bytes:
    """uint8 (3, H, W) -> PNG bytes (no matplotlib: fast enough for a play button)."""
    return encode_png(image, compress_level=1)


def side_by_side(images: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """uint8 (3, H, W) images of one height -> one (3, H, ΣW + gaps) image on white."""
    height = images[0].shape[-2]
    spacer = torch.full((3, height, gap), 255, dtype=torch.uint8)
    parts = []
    for i, image in enumerate(images):
        parts += ([spacer] if i else []) + [image]
    return torch.cat(parts, dim=-1)


TILE_HEIGHT = 128  # sampled images are shown enlarged by an integer factor to about this height


class ImageTiles:
    """A wrapping row of images, each enlarged by an integer factor and captioned (its labels).

    ``widget`` is the row; :meth:`show` replaces its pictures, :meth:`clear` removes them,
    :meth:`grey` dims them while new ones are being made. State: ``pngs``, ``captions``.
    """

    def __init__(self, height: int = TILE_HEIGHT):
        import ipywidgets as widgets

        self._widgets = widgets
        self.height = height
        self.pngs: list[bytes] = []
        self.captions: list[str] = []
        self._tiles: list[tuple] = []  # (picture, caption, box) per image
        self.widget = widgets.HBox([], layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))

    def show(self, images_uint8: torch.Tensor, captions: list[str]) -> None:
        """images_uint8: (B, 3, H, W); captions: one (HTML-safe) line per image. The tiles are
        updated in place when their number stays the same."""
        widgets = self._widgets
        images = enlarge(images_uint8, self.height)
        if len(self._tiles) != len(images):
            self._close_tiles()
            for _ in range(len(images)):
                picture, label = new_image_widget(widgets), widgets.HTML()
                self._tiles.append((picture, label, widgets.VBox([picture, label], layout=widgets.Layout(margin="0 8px 8px 0"))))
        self.pngs = []
        for (picture, label, tile), image, caption in zip(self._tiles, images, captions):
            self.pngs.append(show_png(picture, picture_png(image)))
            width = picture.layout.width
            label.value = f"<div style='font-size: 11px; line-height: 1.3; text-align: center'>{caption}</div>"
            label.layout.width = tile.layout.width = width
        self.captions = list(captions)
        self.widget.children = [tile for _, _, tile in self._tiles]
        self.grey(False)

    def _close_tiles(self) -> None:
        self.widget.children = ()
        for tile in self._tiles:
            for widget in tile:
                widget.close()
        self._tiles = []

    def clear(self) -> None:
        self._close_tiles()
        self.pngs, self.captions = [], []
        self.grey(False)

    def grey(self, on: bool = True) -> None:
        (self.widget.add_class if on else self.widget.remove_class)(STALE)
