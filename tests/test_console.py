"""The run's console, copied to train.log as a person would read it (vae_zoo.run.console)."""

import logging
import sys

from rich.console import Console
from rich.progress import Progress

from vae_zoo.run.console import ConsoleLog, _PlainText


def test_plain_text_plays_back_redraws_and_drops_colours():
    plain = _PlainText(reach=2)
    assert plain.feed("\x1b[1mone\x1b[0m\n") == []
    plain.feed("bar 1/3")
    plain.feed("\r\x1b[2Kbar 2/3")  # a one-line bar redrawn in place
    plain.feed("\r\x1b[2K\x1b[1A\x1b[2Kone\nbar 3/3\n")  # a two-line live region redrawn
    assert plain.pending() == ["one", "bar 3/3"]
    final = plain.feed("a\nb\nc\n")  # lines beyond a redraw's reach are final
    assert final == ["one", "bar 3/3", "a"] and plain.pending() == ["b", "c"]


def test_console_log_keeps_what_came_before_the_file_and_appends_on_resume(tmp_path):
    path = tmp_path / "train.log"
    handler = logging.StreamHandler(sys.stdout)
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        with ConsoleLog() as log:
            print("before the run folder is known")
            logging.getLogger("vae_zoo.test").warning("a logged line")
            log.write_to(path)
            print("after", file=sys.stderr)
        with ConsoleLog() as log:  # a resumed run: appends
            log.write_to(path)
            print("resumed")
        with ConsoleLog():  # a refused resume (or another DDP rank) never names the file
            print("never written")
    finally:
        logger.removeHandler(handler)
    assert path.read_text().splitlines() == ["before the run folder is known", "a logged line", "after", "resumed"]
    assert handler.stream is sys.stdout  # restored


def test_a_live_progress_bar_leaves_its_last_state_once(tmp_path):
    path = tmp_path / "train.log"
    with ConsoleLog(flush_seconds=0.0) as log:
        log.write_to(path)
        console = Console(force_terminal=True, width=80)  # draws like a terminal: colours, redraws
        with Progress(console=console, auto_refresh=False) as progress:
            task = progress.add_task("Epoch 0", total=50)
            for _ in range(50):
                progress.advance(task)
                progress.refresh()
                print("a line printed while the bar is live")
        console.print("[bold]summary[/bold]")
    lines = path.read_text().splitlines()
    assert sum("Epoch 0" in line for line in lines) == 1 and "50/50" not in lines[0]
    assert lines.count("a line printed while the bar is live") == 50
    assert lines[-1] == "summary" and not any("\x1b" in line for line in lines)
