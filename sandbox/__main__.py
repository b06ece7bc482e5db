"""``python -m sandbox [--host 127.0.0.1] [--port 8001] [--config file.json]``"""

from __future__ import annotations

import argparse
import json

from werkzeug.serving import run_simple

from sandbox.server import build


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The sandboxes: HubSpot, amoCRM, Bitrix24, Telegram Bot API "
                    "(sandbox/README.md)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--config", help='JSON file: {"hubspot": {...}, "amocrm": {...}, '
                                         '"bitrix24": {...}, "telegram": {...}}')
    args = parser.parse_args()
    config = None
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            config = json.load(fh)
    print(f"sandbox on http://{args.host}:{args.port}/sandbox/", flush=True)
    run_simple(args.host, args.port, build(config), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
