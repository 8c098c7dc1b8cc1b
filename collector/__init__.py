"""vmcore-collector: save a crashed Linux kernel's memory as a kdump-compressed dump."""

__version__ = "0.1.0"
