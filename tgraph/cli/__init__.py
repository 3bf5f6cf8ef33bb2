"""The tgraph command line: thin; each command calls the Python API."""

from __future__ import annotations

import click

from tgraph.cli.bench_cmd import bench_cmd
from tgraph.cli.common import Group
from tgraph.cli.compile_cmd import compile_cmd
from tgraph.cli.core import info_cmd, ops_cmd, run_cmd
from tgraph.cli.interop_cmd import export_cmd, import_cmd
from tgraph.cli.models_cmd import build_cmd, models_cmd
from tgraph.cli.render_cmd import diff_cmd, render_cmd, view_cmd
from tgraph.cli.replace_cmd import replace_op_cmd
from tgraph.cli.train_cmd import generate_cmd, grad_cmd, train_cmd


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tgraph")
def main():
    """tgraph: build, render, run, differentiate and compile Transformer graphs."""


for command in (ops_cmd, info_cmd, run_cmd, compile_cmd, models_cmd, build_cmd, render_cmd,
                diff_cmd, view_cmd, grad_cmd, train_cmd, generate_cmd, replace_op_cmd,
                export_cmd, import_cmd, bench_cmd):
    main.add_command(command)
