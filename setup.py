"""The optional native data path (ipop.link._fastpath, see ipop/link/fastpath.py).

Everything else is in pyproject.toml. The extension is optional: without a C compiler, the
Python headers or libcrypto's (Debian: gcc, python3-dev, libssl-dev), the build warns and
installs the package without it, and the pure-Python twin runs instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ipop.link._fastpath",
            ["ipop/link/_fastpath.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
