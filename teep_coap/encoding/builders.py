"""Per-message-type builders for the decoder's short way, written out from the field tables.

The generic builder of `cbor_codec` looks up a spec for every label and dispatches on its kind; for
a usual message that costs more than cbor2's decoding of it. Here each message type gets one
function, generated at import from `fields.OPTION_FIELDS` and `POSITIONAL_FIELDS` (the way
`dataclasses` writes `__init__`), with each label's check inlined as a branch of one `if` chain.

A builder takes only the usual case: it returns the model, or None for anything else (extra
positional members, a value that fails its check, a key that is not an unsigned integer). It never
raises; on None the caller takes the generic checked way, which decides and names the error. What a
builder returns equals what the generic way returns for the same input (tests compare them).

Precondition: the array came from input that passed `_plaincbor.plain`, so map keys are integers or
strings (never bool or float, which `==` would confuse with integers) and nothing is a float or tag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from teep_coap.encoding.fields import MESSAGE_CLASS, OPTION_FIELDS, POSITIONAL_FIELDS
from teep_coap.encoding.values import (
    CHECKERS,
    FAST_ASCII,
    FAST_BSTRS,
    FAST_BYTES,
    FAST_COMPIDS,
    FAST_DEEP_LISTS,
    FAST_INT,
    FAST_TEXT,
    FAST_UINTS,
    PLAIN_SHAPES,
    Invalid,
    check_any,
    fast_check,
    instance_template,
)

Builder = Callable[[list[Any], int], Any]

_NO_LIMIT = 1 << 64  # as in values.FAST_CHECKS: a string length can never reach it


def _type_and_range(value: str, type_name: str, measure: str, lo: int, hi: int) -> str:
    """A condition that is true when `value` is NOT of the type or `measure` is out of [lo, hi]."""
    condition = f"type({value}) is not {type_name}"
    if hi < _NO_LIMIT:
        condition += f" or not {lo} <= {measure} <= {hi}"
    elif lo:
        condition += f" or {measure} < {lo}"
    return condition


def _check_lines(kind: str, attr: str, depth: int, checker_name: str) -> list[str]:
    """Statements that check `v` as `kind` and store it in `f[attr]`, or `return None`."""
    code, lo, hi = fast_check(kind)
    store = f"f[{attr!r}]"
    if code == FAST_BYTES:
        return [f"if {_type_and_range('v', 'bytes', 'len(v)', lo, hi)}: return None", f"{store} = v"]
    if code == FAST_INT:
        return [f"if {_type_and_range('v', 'int', 'v', lo, hi)}: return None", f"{store} = v"]
    if code == FAST_ASCII:  # an ASCII text has as many UTF-8 bytes as characters; others: the checker
        return [
            f"if {_type_and_range('v', 'str', 'len(v)', lo, hi)} or not v.isascii():",
            "    try:",
            f"        {store} = {checker_name}(v, {depth}, md)",
            "    except Invalid:",
            "        return None",
            "else:",
            f"    {store} = v",
        ]
    if code == FAST_TEXT:
        return ["if type(v) is not str: return None", f"{store} = v"]
    if code == FAST_UINTS:
        return [
            "if type(v) is not list or not v: return None",
            "for x in v:",
            f"    if {_type_and_range('x', 'int', 'x', lo, hi)}: return None",
            f"{store} = tuple(v)",
        ]
    if code == FAST_BSTRS:
        return [
            "if type(v) is not list or not v: return None",
            "for x in v:",
            "    if type(x) is not bytes: return None",
            f"{store} = tuple(v)",
        ]
    if code == FAST_COMPIDS:
        return [
            "if type(v) is not list or not v: return None",
            "ids = []",
            "for x in v:",
            "    if type(x) is not list: return None",
            "    for y in x:",
            "        if type(y) is not bytes: return None",
            "    ids.append(tuple(x))",
            f"{store} = tuple(ids)",
        ]
    if kind in PLAIN_SHAPES:  # integers of plain CBOR are in range: shape and types are the check
        return [f"r = shape_{checker_name}(v)", "if r is None: return None", f"{store} = r"]
    if kind in FAST_DEEP_LISTS:  # its one-loop fast path, which says None where the checker would explain
        return [
            "if type(v) is not list or not v: return None",
            f"r = fast_{checker_name}(v, {depth}, md)",
            "if r is None: return None",
            f"{store} = r",
        ]
    # a checker of its own (cipher suites, ...): its fast paths are inside it
    return ["try:", f"    {store} = {checker_name}(v, {depth}, md)", "except Invalid:", "    return None"]


def _builder_source(mtype: int) -> tuple[str, dict[str, Any]]:
    specs = OPTION_FIELDS[mtype]  # type: ignore[index]  # MessageType is an int
    positional = POSITIONAL_FIELDS[mtype]  # type: ignore[index]
    names: dict[str, Any] = {"Invalid": Invalid, "check_any": check_any}
    lines = [
        "def build(obj, md):",
        f"    if len(obj) != {2 + len(positional)}: return None",
        "    options = obj[1]",
        "    if type(options) is not dict: return None",
        "    f = copy_template()",
        "    ext = {}",
        "    for label, v in options.items():",
    ]
    keyword = "if"
    for label, attr, kind in specs:
        checker_name = f"check_{attr}"
        names[checker_name] = CHECKERS[kind]
        names[f"fast_{checker_name}"] = FAST_DEEP_LISTS.get(kind)
        names[f"shape_{checker_name}"] = PLAIN_SHAPES.get(kind)
        lines.append(f"        {keyword} label == {int(label)}:")
        lines += [f"            {line}" for line in _check_lines(kind, attr, 3, checker_name)]
        keyword = "elif"
    lines += [
        "        elif type(label) is int and label >= 0:",  # an unknown label: kept as an extension
        "            try:",
        "                if check_any(v, 3, md): return None",
        "            except Invalid:",
        "                return None",
        "            ext[label] = v",
        "        else:",
        "            return None",
    ]
    for index, (attr, kind, _cname) in enumerate(positional, start=2):
        checker_name = f"check_{attr}"
        names[checker_name] = CHECKERS[kind]
        names[f"shape_{checker_name}"] = PLAIN_SHAPES.get(kind)
        lines.append(f"    v = obj[{index}]")
        lines += [f"    {line}" for line in _check_lines(kind, attr, 2, checker_name)]
    lines += [
        "    f['extensions'] = ext",
        "    f['label_order'] = tuple(options)",
        "    msg = new(cls)",
        "    set_dict(msg, '__dict__', f)",
        "    return msg",
    ]
    return "\n".join(lines) + "\n", names


def _make_builder(mtype: int) -> Builder | None:
    cls = MESSAGE_CLASS[mtype]
    template = instance_template(cls)
    if template is None:  # the model needs its constructor: the generic way builds it
        return None
    source, names = _builder_source(mtype)
    names.update(copy_template=template.copy, new=object.__new__, set_dict=object.__setattr__, cls=cls)
    exec(compile(source, f"<teep_coap builder for {cls.__name__}>", "exec"), names)
    builder: Builder = names["build"]
    builder.__doc__ = f"{cls.__name__} from its decoded array, or None (see teep_coap.encoding.builders)."
    return builder


BUILDERS: dict[int, Builder] = {
    mtype: builder for mtype in MESSAGE_CLASS if (builder := _make_builder(mtype)) is not None
}


def builder_source(mtype: int) -> str:
    """The generated source of one builder, for reading and debugging."""
    return _builder_source(mtype)[0]
