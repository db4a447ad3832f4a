"""`manage.py runners status|load|unload|unload-all|restart|logs`: talks to the running gateway."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError

from llamaproxy.manage_api import local_admin_token
from llamaproxy.supervisor import face_urls


def gateway_url() -> str:
    urls = face_urls()
    base = urls.get("dashboard") or urls.get("api")
    if not base:
        raise CommandError("both the dashboard and the API port are turned off: no manage API to talk to")
    return f"{base}/api/manage"


class Command(BaseCommand):
    help = "Show, load, unload, restart the runners of the running llamaproxy, or show a runner's log."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="every runner with its state")
        load = sub.add_parser("load", help="start a model's runner now")
        load.add_argument("model")
        load.add_argument("--ttl", type=int, default=None, help="idle seconds before unloading (-1 never)")
        sub.add_parser("unload", help="stop a model's runner once its requests finish").add_argument("model")
        sub.add_parser("unload-all", help="stop every runner")
        sub.add_parser("restart", help="stop and start a model's runner").add_argument("model")
        logs = sub.add_parser("logs", help="the end of a runner's log")
        logs.add_argument("model")
        logs.add_argument("-n", "--lines", type=int, default=50)
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        model = options.get("model")
        if action == "status":
            result = self.call("GET", "/runners")
        elif action == "load":
            result = self.call("POST", f"/runners/{model}/load", {"ttl": options["ttl"]})
        elif action == "unload":
            result = self.call("POST", f"/runners/{model}/unload")
        elif action == "unload-all":
            result = self.call("POST", "/runners/unload-all")
        elif action == "restart":
            result = self.call("POST", f"/runners/{model}/restart")
        else:
            result = self.call("GET", f"/runners/{model}/log", params={"lines": options["lines"]})
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.print_result(action, result)

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> Any:
        url = gateway_url() + path
        headers = {"Authorization": f"Bearer {local_admin_token()}"}
        try:
            response = httpx.request(method, url, json=body, params=params, headers=headers, timeout=None)
        except httpx.ConnectError:
            raise CommandError(
                f"llamaproxy is not running (nothing answers at {url.split('/api')[0]}); start it with `manage.py serve`"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise CommandError(message)
        return response.json()

    def print_result(self, action: str, result: Any) -> None:
        if action == "status":
            if not result:
                self.stdout.write("No runners yet.")
            for row in result:
                where = f"port {row['port']} pid {row['pid']}" if row.get("port") else ""
                extra = row.get("failure_reason") or (row.get("progress") or {}).get("stage") or ""
                line = f"{row['model']:<32} {row['state']:<9} in-flight {row['in_flight']:<3} {where} {extra}"
                self.stdout.write(line.rstrip())
        elif action in ("load", "restart"):
            self.stdout.write(f"{result['model']} is {result['state']} on port {result['port']}")
        elif action == "unload":
            self.stdout.write(f"{result['model']} {'unloaded' if result['unloaded'] else 'was not running'}")
        elif action == "unload-all":
            self.stdout.write(f"unloaded {result['unloaded']} runner(s)")
        else:
            self.stdout.write("\n".join(result["lines"]))
