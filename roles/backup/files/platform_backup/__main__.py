"""`python3 -m platform_backup`: the same as /usr/local/sbin/platform-backup."""

import sys

from platform_backup.cli import main

sys.exit(main())
