"""Dump file formats: kdump-compressed, makedumpfile's flattened stream, ELF core."""
