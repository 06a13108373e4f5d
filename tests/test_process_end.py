"""`end_process`: a command's process ends without the interpreter's teardown, yet as a normal exit would end it."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import atexit, concurrent.futures, sys, threading
    from sweeper.runtime.setup import end_process

    pool = concurrent.futures.ThreadPoolExecutor(1)  # an idle pool's worker (MLflow keeps some): must not block
    pool.submit(lambda: None).result()
    release = threading.Event()

    def slow_worker():  # a non-daemon thread still working when the command ends: waited for, as at a normal exit
        release.wait()
        open(sys.argv[1] + ".thread", "w").write("done")

    threading.Thread(target=slow_worker).start()
    threading.Timer(0.2, release.set).start()
    atexit.register(lambda: open(sys.argv[1] + ".atexit", "w").write("ran"))
    sys.stdout.write("unflushed line without newline")
    end_process(sys.argv[2] if not sys.argv[2].isdigit() else int(sys.argv[2]))
    open(sys.argv[1] + ".after", "w").write("never")
""")


def _run(tmp_path, code):
    marker = tmp_path / "m"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(marker), code], capture_output=True, text=True,
                          timeout=120)
    return done, marker


def test_the_process_ends_with_its_status_after_the_threads_the_atexit_handlers_and_the_streams(tmp_path):
    done, marker = _run(tmp_path, "3")
    assert done.returncode == 3
    assert done.stdout == "unflushed line without newline"
    assert (tmp_path / "m.thread").read_text() == "done"
    assert (tmp_path / "m.atexit").read_text() == "ran"
    assert not (tmp_path / "m.after").exists()


def test_a_message_ends_it_as_sys_exit_does_on_stderr_with_status_1(tmp_path):
    done, _ = _run(tmp_path, "Error: the message")
    assert (done.returncode, done.stderr.strip()) == (1, "Error: the message")
