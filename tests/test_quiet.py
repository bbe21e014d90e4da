"""
A library stays quiet: an application that configured no logging gets nothing from costmeter on
stdout or stderr, even when stdout is a pipe nobody reads, and importing costmeter does no I/O.
Real processes, real loopback HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# 300 metered calls (plain, streamed, and budget-refused ones, which are warning events), then
# one line of the application's own JSON. Before costmeter went quiet, its ~700-byte line per
# call filled a 64 KiB pipe after about 90 calls and stopped the process.
_APP = textwrap.dedent(
    """
    import json, sys
    import costmeter
    from costmeter.testing import FakeOpenAI

    with FakeOpenAI() as server:
        client = costmeter.OpenAI(base_url=server.base_url, api_key="sk-quiet", max_retries=0)
        for i in range(300):
            if i % 3 == 0:
                with costmeter.budget("0.0000001", name="tiny"):
                    try:
                        client.responses.create(model="gpt-5", input="hi")
                    except costmeter.BudgetExceededError:
                        pass
            elif i % 3 == 1:
                for _ in client.responses.create(model="gpt-5-mini", input="hi", stream=True):
                    pass
            else:
                client.responses.create(model="gpt-5-mini", input="hi")
    print(json.dumps({"calls": 300}))
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTMETER_", "OPENAI_"))}
    env.update(extra)
    return env


def test_unread_stdout_pipe_never_blocks_calls() -> None:
    """stdout is a pipe nobody reads until the process exits: it finishes and wrote only its own line."""
    with subprocess.Popen(
        [sys.executable, "-c", _APP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    ) as proc:
        try:
            proc.wait(timeout=120)  # generous: a blocked pipe would never let it finish
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the application stopped on a full stdout pipe")
        stdout, stderr = proc.communicate()

    assert (0, b"") == (proc.returncode, stderr)
    assert b'{"calls": 300}\n' == stdout


def test_stdout_piped_into_a_json_reader() -> None:
    """`python app.py | jq .`: every stdout line is the application's own JSON."""
    done = subprocess.run(
        [sys.executable, "-c", _APP],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )

    assert 0 == done.returncode, done.stderr
    assert [{"calls": 300}] == [json.loads(line) for line in done.stdout.splitlines()]
    assert "" == done.stderr


def test_import_does_no_io_and_env_file_opens_on_first_event(tmp_path: Path) -> None:
    """COSTMETER_LOG_FILE is not touched by `import costmeter`; the first event creates it."""
    log = tmp_path / "costs.jsonl"
    script = textwrap.dedent(
        """
        import os, sys
        import costmeter
        from costmeter.testing import FakeOpenAI
        print(os.path.exists(sys.argv[1]))
        with FakeOpenAI() as server:
            client = costmeter.OpenAI(base_url=server.base_url, api_key="sk-quiet", max_retries=0)
            client.responses.create(model="gpt-5-mini", input="hi")
        print(os.path.exists(sys.argv[1]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)],
        capture_output=True,
        text=True,
        env=_env(COSTMETER_LOG_FILE=str(log)),
        timeout=120,
        check=False,
    )

    assert ["False", "True"] == done.stdout.split(), done.stderr
    [line] = log.read_text().splitlines()
    assert "costmeter.call" == json.loads(line)["event"]
