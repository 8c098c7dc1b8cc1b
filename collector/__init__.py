"""vmcore-collector: save a crashed Linux kernel's memory as a kdump-compressed dump.

Its version is the installed package's metadata, from setup.py alone (collector/version.py)."""
