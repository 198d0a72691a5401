"""The `mien` command line (mien.cli.main) and its one-line error rule, which the scripts in scripts/ share."""

from mien.cli.main import report_user_errors, run_script

__all__ = ["report_user_errors", "run_script"]
