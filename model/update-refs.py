#!/usr/bin/env python3
"""Move the model's code references along with the code (a maintainer's tool).

    python3 model/update-refs.py [REV]

Each `@ FILE:FIRST[-LAST] FUNCTION "TEXT"` in model/*.pml whose TEXT is no
longer within those lines of FILE (a path from the repository's root when
it has a `/`, otherwise a file of lockfile/src/) is moved by as many lines
as TEXT moved since REV (default HEAD, where the references held): TEXT's
line in REV's file, within the old range (or, if it is not there, the
reference's first line), against its line now (the occurrence nearest the
old one). A reference whose TEXT is gone is left as it is and listed: the code changed, and the model may need more than a new
line number. check.sh remains the judge.
"""
import pathlib
import re
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
root = here.parent
rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
ref = re.compile(r'@ ([A-Za-z0-9_./-]*[a-z_]+\.rs):([0-9]+)(?:-([0-9]+))? ([^ ]+) "(.*?)"')
unresolved = []
moved = 0


def path_of(file):
    return file if "/" in file else f"lockfile/src/{file}"


def old_lines(file):
    out = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path_of(file)}"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def fix(m):
    global moved
    file, first, last, func, text = m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5)
    last = int(last) if last else first
    if not (root / path_of(file)).exists():
        unresolved.append(m.group(0))  # the file moved: point it by hand
        return m.group(0)
    lines = (root / path_of(file)).read_text().splitlines()
    if any(text in line for line in lines[first - 1:last]):
        return m.group(0)
    was = [i + 1 for i, line in enumerate(old_lines(file)) if text in line and first <= i + 1 <= last]
    now = [i + 1 for i, line in enumerate(lines) if text in line]
    if not now:
        unresolved.append(m.group(0))
        return m.group(0)
    # Not where REV had it either (the reference was edited since): the
    # occurrence nearest the reference's first line.
    base = was[0] if was else first
    shift = min((n - base for n in now), key=abs)
    moved += 1
    rng = f"{first + shift}" if last == first else f"{first + shift}-{last + shift}"
    return f'@ {file}:{rng} {func} "{text}"'


for model in sorted(here.glob("*.pml")):
    new = ref.sub(fix, model.read_text())
    model.write_text(new)
print(f"update-refs: {moved} reference(s) moved")
for u in unresolved:
    print(f"update-refs: text gone, left as it is: {u}", file=sys.stderr)
sys.exit(1 if unresolved else 0)
