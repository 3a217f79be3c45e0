"""``python -m synth``: the generator's command line (:mod:`synth.cli`)."""

import sys

from synth.cli import main

sys.exit(main())
