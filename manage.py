#!/usr/bin/env python
"""Django's command-line utility (development settings unless DJANGO_SETTINGS_MODULE is set)."""

import os
import sys

NO_DJANGO = """\
manage.py: Django is not installed for {python}.
evalsvc runs in its own virtualenv, .venv, which bin/run (the demo) and bin/test (the tests)
set up on first use. Then either call its python:
    .venv/bin/python manage.py {command}
or activate it in this shell first:
    . .venv/bin/activate
"""


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsvc.settings.development")
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        if exc.name != "django":
            raise
        command = " ".join(sys.argv[1:]) or "help"
        sys.stderr.write(NO_DJANGO.format(python=sys.executable, command=command))
        raise SystemExit(1) from None
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
