"""Where dumps go. Targets know files and directories, never pages or formats."""
