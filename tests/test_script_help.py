"""Every bash pipeline's --help lists every option of its "# ---- options" block (data_prep/common.sh's
usage reads the block; an option name it could not read would end the list there and hide the rest)."""
import re
import subprocess

import pytest

from tests import helpers

SCRIPTS = sorted(p for pattern in ("scripts/*.sh", "data_prep/*.sh", "bench/*.sh", "docs/results/tools/*.sh")
                 for p in helpers.REPO.glob(pattern) if re.search(r"^# ---- options", p.read_text(encoding="utf-8"), re.M))


def options(text: str):
    block = text.split("# ---- options", 1)[1].splitlines()[1:]
    names = []
    for line in block:
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", line)
        if not m:
            break
        names.append(m.group(1))
    return names


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) >= 5 and any(p.name == "converged_study.sh" for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(helpers.REPO)))
def test_help_lists_every_option(script):
    names = options(script.read_text(encoding="utf-8"))
    assert names, f"{script}: an empty options block"
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^  --([a-z0-9-]+)", proc.stdout, flags=re.M)
    assert listed == [n.replace("_", "-") for n in names]


def test_an_option_with_a_digit_does_not_end_the_list(tmp_path):
    script = tmp_path / "tool.sh"
    script.write_text(f"""#!/usr/bin/env bash
# A tool.
set -euo pipefail

# ---- options
first=1       # the first
extra_ref2=x  # a name with a digit
last=2        # the one after it

. "{helpers.REPO}/data_prep/common.sh"
parse_flags "$@"
echo "$first $extra_ref2 $last"
""")
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert re.findall(r"^  --([a-z0-9-]+)", proc.stdout, flags=re.M) == ["first", "extra-ref2", "last"]
    ran = subprocess.run(["bash", str(script), "--extra-ref2", "y"], capture_output=True, text=True, timeout=60)
    assert ran.stdout.split() == ["1", "y", "2"]
