"""``python -m bench [--json] [--database-url URL]``: both benchmarks, one
after the other (``bench.ingest`` then ``bench.sync``) with their default
sizes. With ``--json`` each prints its own single JSON line."""

from __future__ import annotations

import argparse
import sys

from bench import ingest, sync


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    extra = (["--json"] if args.json else []) + (
        ["--database-url", args.database_url] if args.database_url else []
    )
    return ingest.main(extra) or sync.main(extra)


if __name__ == "__main__":
    sys.exit(main())
