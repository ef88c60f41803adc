"""The application: a QApplication on the qasync event loop, the bridge to the engine, and the main window."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

STYLE_SHEET = Path(__file__).resolve().parent / "style.qss"  # optional: a Qt style sheet, applied when present


USAGE = """usage: ddpm-studio [RUN]

Open DDPM Studio on RUN (a run directory or a checkpoint file); with no RUN, on the bundled model.
The command line for training and exporting is `ddpm` (`ddpm --help`)."""


def run(argv: list[str] | None = None) -> int:
    import qasync

    from .main_window import MainWindow

    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] in ("-h", "--help"):
        print(USAGE)
        return 0
    if len(argv) > 2:
        print(f"error: one run directory at most, got {len(argv) - 1} arguments\n{USAGE}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("DDPM Studio")
    app.setOrganizationName("DDPM Studio")
    if STYLE_SHEET.exists():
        app.setStyleSheet(STYLE_SHEET.read_text(encoding="utf-8"))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    run_dir = argv[1] if len(argv) > 1 else None
    window = MainWindow(run_dir=run_dir)
    window.show()
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
    return 0
