"""A non-editable install works from anywhere: the wheel carries the module
and helper sources, image recipes, kconfig fragments and the kernel suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from harness.pytest_plugin import resolved

REPO = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_runs_outside_the_clone(tmp_path, request):
    # pip builds in the tree it is given: a copy, so the clone gets no build/.
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    src = tmp_path / "src"
    for name in filter(None, tracked):
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            dest.symlink_to((REPO / name).readlink())
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, dest)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("kharness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for need in ("harness/_data/kmods/ringbuf/ringbuf.c", "harness/_data/kmods/include/kh_compat.h",
                 "harness/_data/helpers/khmap.c", "harness/_data/helpers/khagent.c",
                 "harness/_data/kconfigs/base.config", "harness/_data/suite/conftest.py",
                 "harness/_data/suite/scenarios/test_ringbuf.py", "harness/py.typed",
                 "harness/_data/mutants/rb5-fork-skips-mixedmap.patch",
                 "harness/results/templates/matrix.html.j2"):
        assert need in names, f"{need} missing from {wheel.name}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run([env_dir / "bin" / "pip", "install", "-q", str(wheel)], check=True,
                   timeout=600)
    kh = str(env_dir / "bin" / "kharness")
    work = tmp_path / "elsewhere"
    work.mkdir()
    opt = resolved(request.config)
    common = [f"--kernel={opt('--kernel')}", f"--arch={opt('--arch')}"]

    boot = subprocess.run([kh, "boot", *common, "--exec", "uname -r"], cwd=work,
                          capture_output=True, text=True, timeout=900)
    assert boot.returncode == 0, boot.stderr[-3000:]
    assert boot.stdout.strip().endswith(("-amd64", "-arm64"))

    run = subprocess.run([kh, "run", *common, "-k", "RB1"], cwd=work, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (junit,) = (work / "kharness-out").glob("*/junit.xml")
    cases = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert cases and all("RB1" in c for c in cases), cases
    # What ran was the installed copy, not this clone.
    where = subprocess.run([env_dir / "bin" / "python", "-c", "from harness.resources import "
                            "data; print(data('suite'), data('kmods'))"], cwd=work,
                           capture_output=True, text=True, check=True).stdout.split()
    assert all(w.startswith(str(env_dir)) and "site-packages" in w for w in where), where
