"""Native code's stderr (TVM's C++ log) goes to a log during tuning; ours still reaches the user."""

from __future__ import annotations

import os
import sys

from tvm_pipeline.console import native_stderr


def test_native_writes_go_to_the_log_and_ours_to_the_terminal(tmp_path, capfd):
    log = tmp_path / "logs" / "native.log"
    with native_stderr(log):
        os.write(2, b"[12:00:00] rewrite_tensorize.cc:50: Warning: Tensorize failed\n")
        print("tasks done 1/50", file=sys.stderr)
        with native_stderr():                     # nested: dropped, and the outer one restored
            os.write(2, b"dropped\n")
        os.write(2, b"second\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "tasks done 1/50" in err and "after" in err
    assert "Tensorize" not in err and "dropped" not in err and "second" not in err
    assert log.read_text() == ("[12:00:00] rewrite_tensorize.cc:50: Warning: Tensorize failed\n"
                               "second\n")
