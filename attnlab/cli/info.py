"""``attnlab info``: what a checkpoint holds."""
from __future__ import annotations

import json
from typing import Any, List, Mapping

import typer
from typing_extensions import Annotated

from .common import CkptOption, ModelOption, OfficialConfigOption, PretrainedOption, user_errors


@user_errors
def info(
    ckpt: CkptOption,
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Print a checkpoint's architecture, parameter count, input spec, classes and provenance."""
    from ..describe import summarize

    summary = summarize(ckpt, model=model, pretrained=pretrained, official_config=official_config)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(format_summary(summary))


def format_summary(s: dict) -> str:
    inp = s["input"]
    lines = [
        ("source", f"{s['source']} ({s['kind']}" + (f", sha256 {s['sha256']}" if s.get("sha256") else "") + ")"),
        ("architecture", f"{s['arch']} (family {s['family']})"),
        ("options", ", ".join(f"{k}={v}" for k, v in s["options"].items()) or "(defaults)"),
        ("shape", f"dim {s['embed_dim']}, depth {s['depth']}, heads {s['num_heads']}, patch {s['patch_size']}, "
                  f"{s['num_prefix_tokens']} prefix token(s), "
                  + (f"{s['grid'][0]}x{s['grid'][1]} patch grid" if s.get("grid") else "no single patch grid")),
        ("parameters", f"{s['num_params']:,}"),
        ("input", f"{inp['channels']} x {inp['size'][0]} x {inp['size'][1]}, mean {inp['mean']}, std {inp['std']}, "
                  f"{inp['interpolation']}, crop_pct {inp['crop_pct']}"),
    ]
    if s.get("heads_per_stage"):
        lines.append(("stages", f"{s.get('depths') or s.get('stages')} blocks, heads {s['heads_per_stage']}"
                      + (f", window {s['window_per_stage']}" if s.get("window_per_stage") else "")))
    if s.get("residual"):
        lines.append(("residual", str(s["residual"])))
    if s.get("alpha") is not None:
        lines.append(("alpha (a)", f"{s['alpha']} ({s['alpha_mode']})"))
    classes = s["classes"]
    shown = ", ".join(classes[:12]) + (f", ... ({len(classes) - 12} more)" if len(classes) > 12 else "")
    lines.append(("classes", f"{len(classes)}: {shown}"))
    prov = s["provenance"]
    lines.append(("provenance", "" if prov else "(none recorded)"))
    width = max(len(k) for k, _ in lines)
    text = [f"{k.ljust(width)}  {v}".rstrip() for k, v in lines]
    return "\n".join(text + key_value_lines(prov, indent=2))


def key_value_lines(values: Mapping[str, Any], indent: int) -> List[str]:
    """A nested mapping as indented ``key: value`` lines, one per leaf."""
    out = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out.append(f"{' ' * indent}{key}:")
            out += key_value_lines(value, indent + 2)
        else:
            out.append(f"{' ' * indent}{key}: {_plain(value)}")
    return out


def _plain(value: Any) -> str:
    if isinstance(value, float):  # six significant digits; a float still reads as one (1.0, not 1)
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else f"{text}.0"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return "(none)" if value is None else str(value)
