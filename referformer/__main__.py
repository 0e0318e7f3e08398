import sys

from referformer.cli import main

sys.exit(main())
