"""Files of the repository that the native stack runs from (broker, UI and gateway configs)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def repo_file(*parts: str) -> Path:
    path = REPO.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the native stack runs from a checkout of the slowctl repository (pip install -e .)"
        )
    return path


def render(template: str, values: dict[str, str], source: str = "template") -> str:
    """Fills ${NAME} placeholders; every placeholder needs a value, every value a placeholder."""
    import re

    names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template))
    if names - set(values):
        raise KeyError(f"{source}: no value for {', '.join(sorted(names - set(values)))}")
    if set(values) - names:
        raise KeyError(f"{source}: no placeholder for {', '.join(sorted(set(values) - names))}")
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", lambda m: values[m.group(1)], template)
