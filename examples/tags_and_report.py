"""
Tags and the report: label calls, log them as JSON lines, add up the money per label.

    python examples/tags_and_report.py

Offline against a local fake server unless OPENAI_API_KEY is set (then four short real
gpt-5-nano calls). The log goes to a temporary directory, removed when the script ends.
"""

import contextlib
import os
import tempfile

import costmeter
from costmeter.cli import main as costmeter_cli
from costmeter.testing import FakeOpenAI

with tempfile.TemporaryDirectory(prefix="costmeter-example-") as log_dir:  # removed at the end
    log_path = os.path.join(log_dir, "costs.jsonl")
    sink = costmeter.log_to(log_path)  # or: export COSTMETER_LOG_FILE=costs.jsonl

    with contextlib.ExitStack() as stack:
        if os.environ.get("OPENAI_API_KEY"):
            client = costmeter.OpenAI()
        else:  # offline: a local fake OpenAI server, no key, no network
            server = stack.enter_context(FakeOpenAI())
            client = costmeter.OpenAI(base_url=server.base_url, api_key="offline-no-key-needed")

        def ask(question: str) -> None:
            client.responses.create(model="gpt-5-nano", input=question, max_output_tokens=300)

        with costmeter.tags(team="search"):
            ask("Rewrite this query: cheap flights paris")
            with costmeter.tags(feature="spellcheck"):  # nested tags add to the outer ones
                ask("Fix the spelling: recieve")
        with costmeter.tags(team="support"):
            ask("Classify: 'my parcel never arrived'")
            ask("Classify: 'how do I reset my password?'")

    sink.close()  # stop logging to the file
    print(f"log: {log_path}\n")
    # The same as running `costmeter report <log> --by tag:team` in a shell.
    status = costmeter_cli(["report", log_path, "--by", "tag:team"])
raise SystemExit(status)
