"""`python -m chatsft.cli ...` (what a distributed launch of `chatsft train` runs)."""

import sys

from chatsft.cli import main

sys.exit(main())
