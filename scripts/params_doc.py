"""The README's params reference (``python -m scripts.params --doc``), generated from the
schema declared in :mod:`scripts.params`, so the table cannot drift from what is parsed.
"""
from __future__ import annotations

import dataclasses

from scripts.params import REQUIRED, SECTIONS, Key, _yaml_name

def markdown_reference() -> str:
    """The README's params reference, generated from the schema."""
    lines = []

    def table(cls, prefix):
        nested = []
        lines.append("| key | meaning | type | default | example |")
        lines.append("|---|---|---|---|---|")
        for f in dataclasses.fields(cls):
            spec: Key = f.metadata["key"]
            kind = getattr(spec.conv, "describe", "")
            if spec.per_dataset:
                kind = f"{kind}, one per dataset"
            if spec.per_set:
                kind = f"{kind}, one per SETS entry"
            if spec.default is REQUIRED:
                default = "**required**"
            elif isinstance(spec.default, type):
                default = "see below"
                nested.append((spec.default, f"{prefix}.{_yaml_name(f)}"))
            else:
                shown = f"{spec.default:g}" if isinstance(spec.default, float) else repr(spec.default)
                default = f"`{shown}`".replace("|", "\\|")
            example = f"`{spec.example}`" if spec.example else ""
            lines.append(f"| `{_yaml_name(f)}` | {spec.doc} | {kind} | {default} | "
                         f"{example.replace('|', chr(92) + '|')} |")
        for sub, name in nested:
            lines.append("")
            lines.append(f"`{name}`:")
            lines.append("")
            table(sub, name)

    for name, cls in SECTIONS.items():
        lines.append(f"#### `{name}:`")
        lines.append("")
        table(cls, name)
        lines.append("")
    return "\n".join(lines)
