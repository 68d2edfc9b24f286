"""Builds the optional extensions: ``anynet._framing_c`` and
``anynet._connection_core_c``, compiled from the very sources that run as
pure Python without them, ``anynet/_framing.py`` and
``anynet/_connection_core.py``.

The extension is optional so that anynet installs everywhere:

* ``ANYNET_NO_EXTENSIONS=1`` skips it, leaving the pure-Python framing;
* a compiler failure is reported and also leaves the pure-Python framing,
  unless ``ANYNET_REQUIRE_EXTENSIONS=1`` (release builds, CI) turns it into
  an error, so a wheel never ships silently without its fast path.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("ANYNET_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = _flag("ANYNET_REQUIRE_EXTENSIONS")

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    sys.exit("ANYNET_NO_EXTENSIONS and ANYNET_REQUIRE_EXTENSIONS contradict each other")


class optional_build_ext(build_ext):
    """A build_ext whose failure falls back to pure Python unless required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._give_up(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc):
        if REQUIRE_EXTENSIONS:
            raise
        print(
            f"WARNING: the anynet extension could not be built ({exc}); "
            "falling back to the pure-Python framing",
            file=sys.stderr,
        )


def _extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    def extension(name, *sources):
        return Extension(
            name,
            sources=list(sources),
            include_dirs=["src"],
            # Sizes meet frame lengths (uint64_t) in comparisons where both
            # are known to be non-negative.
            extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-Wno-sign-compare"],
        )

    # Each module is one source for both builds: the same .py file, compiled
    # under another name, takes its C types from the .pxd of that name alone
    # (annotations are for the type checker). Cython looks for a source's
    # .pxd by the file's name, so it does not see when these change: a C
    # file older than its module's .pxd files is generated again.
    modules = {
        "anynet/_framing.py": ["anynet/_framing_c.pxd"],
        "anynet/_deflate.py": ["anynet/_deflate_c.pxd"],
        "anynet/_connection_core.py": ["anynet/_connection_core_c.pxd", "anynet/_framing_c.pxd"],
    }
    stale = any(
        os.path.exists(source[:-3] + ".c")
        and os.path.getmtime(source[:-3] + ".c") < max(map(os.path.getmtime, pxd_files))
        for source, pxd_files in modules.items()
    )
    return cythonize(
        [
            extension("anynet._framing_c", "anynet/_framing.py", "src/mask.c", "src/utf8.c"),
            extension("anynet._deflate_c", "anynet/_deflate.py"),
            extension("anynet._connection_core_c", "anynet/_connection_core.py"),
        ],
        force=stale,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "freethreading_compatible": True,
            "annotation_typing": False,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": optional_build_ext})
