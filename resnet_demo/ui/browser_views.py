"""What the visitor's browser draws by itself, with no round trip to the server.

A click on another stage of a map that the strip already shows needs no computing: the strip's
tile at that stage *is* the map the server would draw (the same method, class, opacity and crop,
the same bytes and so the same name: ``<hash of its bytes>/image.jpeg``, whether it came as Gradio's
file or inside the message, see :mod:`.inline_images`). Drawn in the browser at once, the new map
shows while the server's answer (the caption and the raw map) is on its way, and that answer's map
is the same picture again, so the browser does not redraw it.

The check is the pictures themselves, not the settings: only when the slider's map is one of the
strip's tiles is the strip known to show this photo, class, method and opacity over the crop (a
method the strip does not show, the whole-photo view, or a strip of the last photo still on its
way fail it); otherwise the slider stays as it is and the server's answer draws the map. A map
that equals a tile by chance (two all-zero maps of different methods) shows the tile until the
server's answer replaces it.
"""

from __future__ import annotations

__all__ = ["STAGE_FROM_STRIP"]

# A Gradio ``js`` function: the stage picker's value, the strip's tiles ({image: FileData, caption}) and
# the slider's pair of FileData in; the slider's new value out (in a list: one output).
STAGE_FROM_STRIP = """(stage, strip, pair) => {
  const tiles = Array.isArray(strip) ? strip : [];
  const name = (f) => f.path.split('/').slice(-2).join('/');  // "<hash of its bytes>/image.<format>"
  const shown = Array.isArray(pair) && pair[1] && pair[1].path ? name(pair[1]) : null;
  const inStrip = shown !== null && tiles.some(t => t && t.image && t.image.path && name(t.image) === shown);
  const next = tiles.find(t => t && t.image && typeof t.caption === 'string' && t.caption.split(' ')[0] === stage);
  return [inStrip && next ? [pair[0], next.image] : pair];
}"""
