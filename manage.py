#!/usr/bin/env python
"""Django's command-line utility for llamaproxy."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # Configuration mistakes are the user's to fix: one clear line, no traceback.
        print(f"llamaproxy: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
