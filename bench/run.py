"""The benchmark as a plain script (not collected by pytest): the same as `python -m minimalsgd bench`.

    python bench/run.py --quick
    python bench/run.py --dtype both --json bench/results.json --plot bench/bandwidth.png
"""

import sys

from minimalsgd._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
