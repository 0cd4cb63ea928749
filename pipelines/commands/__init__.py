"""CLI sub-commands beyond the core ones: each module here defines ``add_parser(subparsers)``.

`pipelines.cli` imports every module of this package, so a new stage (tune, ablate, submit, ...)
is one file here, with no edit to the CLI itself.
"""
