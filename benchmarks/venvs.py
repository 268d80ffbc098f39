"""Isolated virtual environments for the tools we compare against (LiteLLM, instructor).

Their pins clash with ours (instructor wants jiter<0.15, openai 3.51 wants >=0.16), and a
competitor must run with its own dependencies anyway, so each gets a venv under `.bench/venvs/`
built from a compiled, fully pinned requirements file in `benchmarks/envs/`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS = Path(__file__).resolve().parent / "envs"
VENVS = ROOT / ".bench" / "venvs"
UV = ROOT / ".tools" / "bin" / "uv"


def ensure_venv(name: str) -> Path:
    """Create (or reuse) the venv for `benchmarks/envs/<name>.txt`; return its python."""
    requirements = ENVS / f"{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    uv = str(UV) if UV.exists() else "uv"
    print(f"[bench] building venv {name} from {requirements.relative_to(ROOT)}", file=sys.stderr)
    subprocess.run(
        [uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(venv)], check=True
    )
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",
            "--python",
            str(python),
            "-r",
            str(requirements),
        ],
        check=True,
    )
    stamp.write_text(digest)
    return python
