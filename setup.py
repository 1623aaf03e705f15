"""Only the C extension lives here; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "teep_coap.encoding._plaincbor",
            ["teep_coap/encoding/_plaincbor.c"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra"],
            optional=False,
        )
    ]
)
