"""The application: a QApplication on the qasync event loop, the bridge to the engine, and the main window."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def run(argv: list[str] | None = None) -> int:
    import qasync

    from .main_window import MainWindow

    argv = list(sys.argv if argv is None else argv)
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("DDPM Studio")
    app.setOrganizationName("DDPM Studio")
    style = ASSETS / "style.qss"
    if style.exists():
        app.setStyleSheet(style.read_text(encoding="utf-8"))
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
