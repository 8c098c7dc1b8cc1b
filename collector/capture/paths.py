"""Where the collector's own files live on a machine (kept apart from config.py, whose parser
every vmcore-save start would otherwise import only to test whether the file exists)."""

CONFIG_PATH = "/etc/vmcore-collector.conf"
