"""``geoseg qgis install|uninstall``: put the QGIS Processing plugin into a QGIS profile, or take it out."""

from __future__ import annotations

import click

from geoseg.cli.options import user_errors

profile_opt = click.option("--profile", default="default", show_default=True, help="QGIS user profile name.")
profiles_dir_opt = click.option("--profiles-dir", type=click.Path(file_okay=False),
                                help="QGIS profiles folder (default: this platform's, e.g. "
                                     "~/.local/share/QGIS/QGIS3/profiles).")


@click.group()
def qgis() -> None:
    """The geoseg Processing provider for QGIS (toolbox, modeler, qgis_process)."""


@qgis.command()
@profile_opt
@profiles_dir_opt
@user_errors
def install(profile: str, profiles_dir: str | None) -> None:
    """Copy the plugin into PROFILE; it will run this environment's geoseg."""
    from geoseg.qgis.install import geoseg_command, install as do_install

    target = do_install(profile, profiles_dir)
    click.echo(f"installed the geoseg QGIS plugin in {target} (runs {' '.join(geoseg_command())})")
    click.echo("enable it in QGIS (Plugins > Manage and Install Plugins > Installed > geoseg), or run: "
               "qgis_process plugins enable geoseg")


@qgis.command()
@profile_opt
@profiles_dir_opt
@user_errors
def uninstall(profile: str, profiles_dir: str | None) -> None:
    """Remove the plugin from PROFILE."""
    from geoseg.qgis.install import plugin_dir, uninstall as do_uninstall

    removed = do_uninstall(profile, profiles_dir)
    click.echo(f"removed {removed}" if removed else f"nothing to remove: {plugin_dir(profile, profiles_dir)} "
                                                    "does not exist")
