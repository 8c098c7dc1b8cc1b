"""``python3 -m collector.capture``: what the capture initramfs's /init runs after a crash."""
import sys

from .environment import main

sys.exit(main())
