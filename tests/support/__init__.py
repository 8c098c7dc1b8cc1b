"""Test support: synthetic vmcores and printk rings, dump checkers, throwaway sshd and NFS servers."""
