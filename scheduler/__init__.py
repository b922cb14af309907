"""Scheduling: runs, leases, retries, the daemon loop and the command line."""
