"""What the wheel and the sdist hold: the wheel no C or Cython sources and stripped
extensions; the sdist the sources the build needs and not the generated C file.
Prints their sizes. Usage: check_wheel.py WHEEL SDIST"""

import subprocess
import sys
import tarfile
import tempfile
import zipfile

EXTENSIONS = ("_core", "_csv", "_guard")  # the compiled modules setup.py declares


def main(wheel, sdist):
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".h"))]
        if sources:
            problems.append(f"the wheel carries sources: {sources}")
        extensions = [n for n in names if n.endswith(".so")]
        for module in EXTENSIONS:
            held = [n for n in extensions if n.startswith(f"fastbp/{module}.")]
            if len(held) != 1:
                problems.append(f"the wheel should hold one fastbp.{module} extension, has {held}")
        for needed in (
            "fastbp/py.typed",
            "fastbp/_core.pyi",
            "fastbp/_guard.pyi",
            "fastbp/__init__.py",
        ):
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
            "fastbp/_csv.pyx",
            "fastbp/_guard.pyx",
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
        for module in EXTENSIONS:
            if any(n.endswith(f"fastbp/{module}.c") for n in names):
                problems.append(f"the sdist carries the generated fastbp/{module}.c")
    import os

    print(
        f"wheel {os.path.basename(wheel)}: {os.path.getsize(wheel) / 1e6:.2f} MB;"
        f" sdist: {os.path.getsize(sdist) / 1e6:.2f} MB"
    )
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main(*sys.argv[1:3])
