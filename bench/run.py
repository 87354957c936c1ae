"""The benchmark as a plain script (not collected by pytest): the same as `python -m minimalsgd bench`.

    python bench/run.py --quick
    python bench/run.py --dtype both --json bench/results/DATE_MACHINE_full.json --plot bench/results/DATE_MACHINE_bandwidth.png

Dated runs live in bench/results/, one file per run with the machine in its name (README.md there).
"""

import sys

from minimalsgd._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
