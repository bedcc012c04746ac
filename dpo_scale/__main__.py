import sys

from dpo_scale.cli import main

if __name__ == "__main__":
    sys.exit(main())
