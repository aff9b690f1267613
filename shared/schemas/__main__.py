"""`python -m shared.schemas [--check]` (`make schemas`): write the files generated from the models.

    shared/policy/desired-state.schema.json   the desired-state document's JSON Schema (draft 2020-12)
    openapi/passkey-guard.yaml                the model-backed `components.schemas`, between the markers

`--check` writes nothing and exits 1 naming each file that is not what the models give (the test
`tests/schemas/test_generate.py` holds the committed files to the same bytes).
"""
from __future__ import annotations

import sys
from pathlib import Path

from shared.schemas.generate import generated_files


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[2]
    check = "--check" in argv
    stale: list[str] = []
    for relative, text in generated_files(root).items():
        path = root / relative
        if path.read_text(encoding="utf-8") != text:
            stale.append(relative)
            if not check:
                path.write_text(text, encoding="utf-8")
    for relative in stale:
        print(f"{'stale' if check else 'wrote'}: {relative}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
