"""``python -m benchmarks [args]`` is ``derive bench [args]``."""
import sys

from derive.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
