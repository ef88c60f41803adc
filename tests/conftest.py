"""Test-session setup: Qt runs offscreen (with no display and no platform, Qt aborts the process)."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
