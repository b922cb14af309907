#!/usr/bin/env python3
"""Single entry point of the compressor anomaly-detection pipeline (see `--help`)."""
import sys

from scheduler.cli import main

if __name__ == "__main__":
    sys.exit(main())
