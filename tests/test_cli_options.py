"""Options ``infer`` and ``batch`` share are declared once; verbosity is set on the group (as ``rio -v``) or on
the command, and reaches the command through ``ctx.obj``."""

from __future__ import annotations

import click
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.cli.batch_cmd import batch
from geoseg.cli.infer_cmd import infer
from geoseg.cli.options import quiet_opt, verbose_opt, verbosity

SHARED = ("--model", "--pipeline", "--classes", "--bands", "--tile", "--halo", "--batch-size", "--block-size",
          "--device", "--runtime", "--precision", "--workers", "--resample")


def _helps(command: click.Command) -> dict[str, str | None]:
    return {opt: p.help for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def test_infer_and_batch_share_their_run_options_word_for_word() -> None:
    ours, theirs = _helps(infer), _helps(batch)
    for opt in SHARED:
        assert ours[opt] and ours[opt] == theirs[opt], opt


def test_verbosity_from_the_group_and_the_command_adds_up() -> None:
    seen = []

    @click.command()
    @verbose_opt
    @quiet_opt
    def probe(verbose: int, quiet: bool) -> None:
        seen.append((verbose, quiet, verbosity()))

    group = click.Group("g", params=list(main.params), callback=main.callback)
    group.add_command(probe)
    runner = CliRunner()
    for args, want in ((["probe"], (0, False)), (["-v", "probe"], (1, False)), (["-q", "probe"], (0, True)),
                       (["probe", "-q"], (0, True)), (["-v", "probe", "-v"], (2, False))):
        result = runner.invoke(group, args)
        assert result.exit_code == 0, result.output
        verbose, quiet, stored = seen.pop()
        assert (verbose, quiet) == want and tuple(stored) == want, args


def test_group_verbose_shows_the_traceback_of_a_user_error(tmp_path) -> None:
    missing = str(tmp_path / "nope.safetensors")
    plain = CliRunner().invoke(main, ["models", "show", missing])
    assert plain.exit_code == 1 and "geoseg: error:" in plain.output
    verbose = CliRunner().invoke(main, ["-v", "models", "show", missing])
    assert verbose.exit_code == 1 and verbose.exception is not None and "geoseg: error:" not in verbose.output
