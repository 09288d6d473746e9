"""A command that succeeded ends without the interpreter's teardown, yet loses nothing."""

import subprocess
import sys

from tfllm.commands import fast_exit

# A process that leaves work for a normal exit: a thread still running, an executor's idle
# workers, an atexit handler and output held in stdout's buffer (a pipe: block-buffered).
LEFT_FOR_EXIT = """
import atexit, threading, time
from concurrent.futures import ThreadPoolExecutor
from tfllm.commands.fast_exit import finish
pool = ThreadPoolExecutor(2)
assert pool.submit(lambda: 1).result() == 1
threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
atexit.register(lambda: print("atexit ran"))
print("buffered", end="")
finish(3)
print("never")
"""


def test_finish_does_what_a_normal_exit_does_before_the_teardown():
    proc = subprocess.run(
        [sys.executable, "-c", LEFT_FOR_EXIT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "bufferedthread done\natexit ran\n"
    assert proc.stderr == ""


def test_a_worker_of_a_cluster_exits_the_ordinary_way(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert fast_exit.applies()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}}')
    assert not fast_exit.applies()
