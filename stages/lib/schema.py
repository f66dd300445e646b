"""What every schema here shares: unknown keys are errors, and pydantic's errors read as one line per key.

params.yaml, data/constraints.yaml and every JSONL record are validated by pydantic models derived from
``Strict``; ``describe_errors`` turns a ValidationError into lines that name the dotted key at fault, so a
user sees ``train_dpo.betta: unknown key`` rather than pydantic's report.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored field.
    model_config = ConfigDict(extra="forbid")


def describe_errors(exc: ValidationError, *, root: str = "(top level)", unknown_hint: str = "",
                    show_input: bool = False) -> list[str]:
    """One ``key: what is wrong`` line per error. ``root`` names an error of the whole object; ``unknown_hint``
    follows "unknown key"; ``show_input`` adds the value that was refused."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or root
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key" + (f" ({unknown_hint})" if unknown_hint else ""))
        elif err["type"] == "literal_error" and show_input:
            lines.append(f"{key}: {err['input']!r} is not allowed; expected {(err.get('ctx') or {}).get('expected')}")
        elif show_input:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        else:
            lines.append(f"{key}: {err['msg']}")
    return lines
