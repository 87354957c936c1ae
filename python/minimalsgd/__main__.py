"""``python -m minimalsgd``: bench, config, and the locations C++ builds need."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `bench` takes its own options: hand everything after it to the bench's parser.
    if argv and argv[0] == "bench":
        from . import _bench

        return _bench.main(argv[1:])

    parser = argparse.ArgumentParser(
        prog="python -m minimalsgd",
        description="minimalsgd: one fused SGD step. Commands: bench (run `python -m minimalsgd bench -h`), config.",
    )
    parser.add_argument("command", nargs="?", choices=["config", "bench"], help="config: print backend_info()")
    parser.add_argument("--version", action="store_true", help="print the version")
    parser.add_argument("--includedir", action="store_true", help="print the directory of the C++ headers")
    parser.add_argument("--includes", action="store_true", help="print the -I flag for the C++ headers")
    parser.add_argument("--cmakedir", action="store_true", help="print the directory of minimalsgdConfig.cmake")
    args = parser.parse_args(argv)

    if args.version:
        from ._version import __version__

        print(__version__)
    if args.includedir or args.includes or args.cmakedir:
        from . import _paths

        if args.includes:
            print(f"-I{_paths.get_include()}")
        if args.includedir:
            print(_paths.get_include())
        if args.cmakedir:
            print(_paths.get_cmake_dir())
    if args.command == "config":
        from ._config import show_config

        show_config()
    if not (args.version or args.includedir or args.includes or args.cmakedir or args.command):
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
