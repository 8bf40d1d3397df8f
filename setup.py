"""Native parts, built by `pip install` when a C compiler is present; each has a Python twin.

`optional=True`: a machine without a compiler still installs callbridge, on the Python paths.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "callbridge.media._polyphase",
            ["src/callbridge/media/_polyphase.c"],
            extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros"],
            optional=True,
        ),
        Extension(
            "callbridge.media._mix",
            ["src/callbridge/media/_mix.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "callbridge.engine._forward",
            ["src/callbridge/engine/_forward.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
