"""What the wheel and the sdist hold: the wheel no C or Cython sources and a stripped
extension; the sdist the sources the build needs and not the generated C file.
Prints their sizes. Usage: check_wheel.py WHEEL SDIST"""

import subprocess
import sys
import tarfile
import tempfile
import zipfile


def main(wheel, sdist):
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".h"))]
        if sources:
            problems.append(f"the wheel carries sources: {sources}")
        extensions = [n for n in names if n.startswith("fastbp/_core") and n.endswith(".so")]
        if len(extensions) != 1:
            problems.append(f"the wheel should hold one fastbp/_core extension, has {extensions}")
        for needed in ("fastbp/py.typed", "fastbp/_core.pyi", "fastbp/__init__.py"):
            if needed not in names:
                problems.append(f"the wheel lacks {needed}")
        with tempfile.TemporaryDirectory() as folder:
            for name in extensions:
                path = archive.extract(name, folder)
                sections = subprocess.run(
                    ["readelf", "-S", path], capture_output=True, text=True, check=True
                ).stdout
                if ".symtab" in sections or ".debug_info" in sections:
                    problems.append(f"{name} is not stripped")
                print(f"extension {name}: {archive.getinfo(name).file_size / 1e6:.2f} MB")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        for needed in (
            "fastbp/_core.pyx",
            "fastbp/_core.pxd",
            "fastbp/_vmath.h",
            "fastbp/_parallel.h",
            "fastbp/_smallgemm.h",
            "setup.py",
            "pyproject.toml",
            "LICENSE",
            "tests/conftest.py",
            "docs/index.md",  # tests/test_docs.py runs the docs' snippets
        ):
            if not any(n.endswith("/" + needed) for n in names):
                problems.append(f"the sdist lacks {needed}")
        if any(n.endswith("fastbp/_core.c") for n in names):
            problems.append("the sdist carries the generated fastbp/_core.c")
    import os

    print(
        f"wheel {os.path.basename(wheel)}: {os.path.getsize(wheel) / 1e6:.2f} MB;"
        f" sdist: {os.path.getsize(sdist) / 1e6:.2f} MB"
    )
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main(*sys.argv[1:3])
