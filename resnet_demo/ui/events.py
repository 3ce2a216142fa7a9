"""Named results: every event with several outputs returns a named tuple whose fields are the names
of the components it fills, and its tab builds the event's outputs from the same fields.

The order of a handler's values and of its event's components is then written once, in the type.
Adding a panel is a field in the type, a component of that name in the tab and a value in the
handler; a field that names no component fails when the page is built (every test that builds a
tab or the app catches it), not on the first click. A named tuple rather than a dataclass: Gradio
takes a tuple of values, and tests and scripts may unpack it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gradio.blocks import Block

__all__ = ["extend", "outputs_of"]


def outputs_of(result: type[tuple[Any, ...]], tab: object = None, /, **components: Block) -> list[Block]:
    """The components ``result``'s fields name, in the fields' order: each one is the keyword argument
    of that name, or else the attribute of that name of ``tab`` (a tab's dataclass of components).

    Raises ``TypeError`` when a field names no component, when a keyword argument is no field,
    or when a field is found both ways.
    """
    fields = getattr(result, "_fields", None)
    if not isinstance(fields, tuple):
        raise TypeError(f"{result!r} is not a named tuple")
    stray = sorted(set(components) - set(fields))
    if stray:
        raise TypeError(f"{result.__name__} has no field {', '.join(stray)}")
    where = type(tab).__name__ if tab is not None else "the keyword arguments"
    out = []
    for name in fields:
        if name in components and hasattr(tab, name):
            raise TypeError(f"{result.__name__}.{name} is both a keyword argument and an attribute of {where}")
        found = components[name] if name in components else getattr(tab, name, None)
        if not isinstance(found, Block):
            raise TypeError(f"{result.__name__}.{name} names no component of {where}")
        out.append(found)
    return out


def extend(
    base: type[tuple[Any, ...]], name: str, fields: dict[str, Any], *, doc: str, drop: tuple[str, ...] = ()
) -> Any:
    """A named tuple type called ``name``, documented by ``doc``: ``base``'s fields (with their types)
    but those ``drop`` names, then ``fields``. For an event that fills what another fills and more (or
    less), without writing the shared fields twice. It belongs to ``base``'s module, where its types are
    named. Raises ``TypeError`` when ``drop`` names no field of ``base``."""
    stray = sorted(set(drop) - set(base.__annotations__))
    if stray:
        raise TypeError(f"{base.__name__} has no field {', '.join(stray)}")
    kept = [(k, t) for k, t in base.__annotations__.items() if k not in drop]
    made = NamedTuple(name, [*kept, *fields.items()])  # type: ignore[misc]
    made.__doc__, made.__module__ = doc, base.__module__
    return made
