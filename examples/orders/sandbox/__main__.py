"""``python -m agent_coordinator.examples.orders.sandbox``: serve the sandbox services over
HTTP (see :mod:`agent_coordinator.examples.orders.sandbox.server`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent_coordinator.core.errors import InvalidInput
from agent_coordinator.examples.orders.sandbox.scenario import Scenario


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_coordinator.examples.orders.sandbox",
        description="Serve the sandbox inventory, payment and shipping services over HTTP. Prints "
        "'sandbox listening on http://HOST:PORT (store: ...)' once it accepts connections.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8700, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--store",
        metavar="FILE",
        help="SQLite file keeping the state across restarts (created if missing; default: memory only)",
    )
    parser.add_argument(
        "--scenario",
        metavar="FILE",
        help="scenario JSON file (default: the default scenario, or the one stored in --store)",
    )
    args = parser.parse_args(argv)
    try:
        scenario = Scenario.from_file(args.scenario) if args.scenario else None
        from agent_coordinator.examples.orders.sandbox.server import serve  # uvicorn is needed only to serve

        serve(host=args.host, port=args.port, store=args.store, scenario=scenario)
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
