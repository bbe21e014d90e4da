"""The pre-flight estimator: counts against real recorded traffic, reasons, bounds, costs."""

from __future__ import annotations

import base64
import gc
import json
import struct
import tracemalloc
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

import costmeter
from costmeter import ConfigurationError, count_tokens
from costmeter import _estimate as estimate_module
from costmeter import _input_count as input_count_module
from costmeter._estimate import DEFAULT_MAX_OUTPUT_TOKENS, Estimate, estimate, register_estimator
from costmeter._images import image_size
from costmeter._input_count import count_request_input, output_tokens_of
from costmeter._pricing import PRICES_FILE_ENV
from costmeter._tokenizer import encoding_for
from costmeter.testing import FakeOpenAI
from tests.conftest import load_traffic

TRAFFIC = load_traffic()
# Labels meaning the billed input holds content the request does not show in full.
HIDDEN_CONTEXT = {
    "previous_response_id",
    "hosted_tools",
    "image",
    "audio",
    "file",
    "reasoning_items_in_input",
    "encrypted_items_in_input",
}
# Known misses, kept visible rather than hidden by a looser bound.
KNOWN_MISSES = {
    "pydantic-ai-39.json": "o1-mini bills ~8 hidden tokens the cookbook formula cannot see",
    "openllmetry-3.json": "a nested $ref schema renders shorter than the server's (-10%)",
}


def recorded_input(record: dict[str, Any]) -> int:
    usage = record["usage"]
    return int(usage.get("input_tokens", usage.get("prompt_tokens")))


def count(record: dict[str, Any]) -> tuple[int, bool, tuple[str, ...]]:
    request = record["request"]
    return count_request_input(record["endpoint"], request, request["model"])


def png(width: int, height: int) -> bytes:
    """A valid, tiny, all-black grayscale PNG built with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user_image(url: str, detail: str = "auto") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": url, "detail": detail},
            ],
        }
    ]


class TestRecordedTraffic:
    @pytest.mark.parametrize(
        ("name", "record"),
        [
            pytest.param(
                name,
                record,
                marks=[pytest.mark.xfail(reason=KNOWN_MISSES[name])]
                if name in KNOWN_MISSES
                else [],
            )
            for name, record in TRAFFIC
            if "early_responses_api" not in record["meta"]["features"]
        ],
        ids=[
            name
            for name, record in TRAFFIC
            if "early_responses_api" not in record["meta"]["features"]
        ],
    )
    def test_complete_estimates_are_within_bound(self, name: str, record: dict[str, Any]) -> None:
        """Complete: within max(2%, 1 token) for text, max(5%, 10 tokens) with tools."""
        tokens, complete, reasons = count(record)
        features = set(record["meta"]["features"])
        if not complete:
            assert features & HIDDEN_CONTEXT, reasons
            return
        error = abs(tokens - recorded_input(record))
        if features & {"function_tools", "tool_results"}:
            assert error <= max(0.05 * recorded_input(record), 10)
        else:
            assert error <= max(0.02 * recorded_input(record), 1)

    @pytest.mark.parametrize(
        ("name", "record"),
        [(n, r) for n, r in TRAFFIC if set(r["meta"]["features"]) & (HIDDEN_CONTEXT - {"image"})],
        ids=[n for n, r in TRAFFIC if set(r["meta"]["features"]) & (HIDDEN_CONTEXT - {"image"})],
    )
    def test_hidden_context_is_reported_incomplete(self, name: str, record: dict[str, Any]) -> None:
        """Recordings billed for context the request does not carry are never called complete."""
        _, complete, reasons = count(record)

        assert not complete
        assert reasons


class TestCountingRules:
    def test_string_input_is_one_user_message(self) -> None:
        """A string ``input`` counts exactly like a one-message list."""
        as_list = count_request_input(
            "responses", {"input": [{"role": "user", "content": "Hi there"}]}, "gpt-4o"
        )

        assert count_request_input("responses", {"input": "Hi there"}, "gpt-4o") == as_list

    def test_message_formula(self) -> None:
        """A message costs 3 + role + content, and the reply is primed with 3 (non-reasoning)."""
        text = "The quick brown fox jumps over the lazy dog."
        body = {"input": text, "instructions": "Be brief."}
        expected = (
            (3 + 1 + count_tokens("Be brief.", model="gpt-4o"))
            + (3 + 1 + count_tokens(text, model="gpt-4o"))
            + 3
        )

        assert count_request_input("responses", body, "gpt-4o") == (expected, True, ())

    def test_reasoning_models_prime_with_two_plus_two_per_assistant_turn(self) -> None:
        """o-series/gpt-5 prime with 2 and pay 2 more per earlier assistant message."""
        body = {"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
        plain, _, _ = count_request_input("responses", body, "gpt-4o")

        assert count_request_input("responses", body, "gpt-5")[0] == plain - 3 + 2 + 2

    def test_empty_instructions_send_no_message(self) -> None:
        """``instructions=""`` adds nothing, as the API bills it."""
        assert count_request_input(
            "responses", {"input": "hi", "instructions": ""}, "gpt-4o"
        ) == count_request_input("responses", {"input": "hi"}, "gpt-4o")

    def test_chat_name_costs_one_more(self) -> None:
        """A Chat ``name`` costs its tokens plus one."""
        plain = count_request_input(
            "chat.completions", {"messages": [{"role": "user", "content": "x"}]}, "gpt-4o"
        )[0]
        named = count_request_input(
            "chat.completions",
            {"messages": [{"role": "user", "content": "x", "name": "bob"}]},
            "gpt-4o",
        )[0]

        assert named == plain + 1 + count_tokens("bob", model="gpt-4o")

    def test_function_tools_add_tokens_and_stay_complete(self) -> None:
        """Client-side function tools are counted and do not make the estimate incomplete."""
        tool = {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
        without = count_request_input("responses", {"input": "hi"}, "gpt-4o")[0]
        tokens, complete, _ = count_request_input(
            "responses", {"input": "hi", "tools": [tool]}, "gpt-4o"
        )

        assert complete
        assert tokens > without

    def test_docstring_descriptions_are_dedented(self) -> None:
        """A docstring-style description counts as ``inspect.cleandoc`` leaves it."""
        params = {"type": "object", "properties": {"c": {"type": "number"}}}
        doc = "Convert Celsius.\n\n    Args:\n        c: degrees\n    "
        clean = "Convert Celsius.\n\nArgs:\n    c: degrees"

        def tokens(description: str) -> int:
            tool = {"type": "function", "name": "f", "description": description}
            return count_request_input(
                "responses", {"input": "hi", "tools": [{**tool, "parameters": params}]}, "gpt-4o"
            )[0]

        assert tokens(doc) == tokens(clean)
        assert tokens(doc) > tokens("Convert Celsius.")

    def test_a_forced_function_is_named_to_the_model(self) -> None:
        """A forced ``tool_choice`` costs the tokens of ``functions.<name>``."""
        tool = {"type": "function", "name": "get_current_weather", "parameters": {}}
        body = {"input": "hi", "tools": [tool]}
        free = count_request_input("responses", body, "gpt-4o-mini")[0]

        forced = count_request_input(
            "responses",
            {**body, "tool_choice": {"type": "function", "name": "get_current_weather"}},
            "gpt-4o-mini",
        )

        named = count_tokens("functions.get_current_weather", model="gpt-4o-mini")
        assert forced == (free + named, True, ())

    @pytest.mark.parametrize(
        "choice", ["required", {"type": "function", "function": {"name": "f"}}]
    )
    def test_forced_choice_on_chat_reasoning_models_is_incomplete(self, choice: object) -> None:
        """Chat reasoning models bill a hidden instruction for a forced choice: say so."""
        tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
        body = {"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}

        _, complete, reasons = count_request_input(
            "chat.completions", {**body, "tool_choice": choice}, "gpt-5"
        )

        assert (complete, reasons) == (False, ("forced_tool_choice",))
        assert count_request_input("chat.completions", body, "gpt-5")[1] is True

    def test_custom_tool_grammar_is_counted_and_marked(self) -> None:
        """A custom tool's grammar definition is shown to the model: counted, marked incomplete."""
        grammar = 'start: expr\nexpr: NUMBER ("+" NUMBER)*\n%import common.NUMBER'
        tool: dict[str, Any] = {"type": "custom", "name": "calc", "description": "Add numbers."}
        plain = count_request_input("responses", {"input": "hi", "tools": [tool]}, "gpt-5")
        tool["format"] = {"type": "grammar", "syntax": "lark", "definition": grammar}

        tokens, complete, reasons = count_request_input(
            "responses", {"input": "hi", "tools": [tool]}, "gpt-5"
        )

        assert (complete, reasons) == (False, ("custom_tool_grammar",))
        assert tokens >= plain[0] + count_tokens(grammar, model="gpt-5")

    def test_embeddings_sum_strings_and_token_arrays(self) -> None:
        """Embeddings bill the inputs' tokens with no framing; token arrays count their length."""
        assert count_request_input(
            "embeddings", {"input": ["hello world", [1, 2, 3]]}, "text-embedding-3-small"
        ) == (
            count_tokens("hello world", model="text-embedding-3-small") + 3,
            True,
            (),
        )
        assert (
            count_request_input("embeddings", {"input": [5, 6]}, "text-embedding-3-small")[0] == 2
        )

    def test_unknown_api_is_rejected(self) -> None:
        """An api name the estimator does not know is a configuration error."""
        with pytest.raises(ConfigurationError, match="api"):
            count_request_input("images", {}, "gpt-4o")


class TestIncompleteReasons:
    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
            ({"input": "hi", "conversation": "conv_1"}, "conversation"),
            ({"prompt": {"id": "pmpt_1"}}, "prompt_template"),
            ({"input": "hi", "reasoning": {"mode": "pro"}}, "reasoning_mode_pro"),
            (
                {
                    "input": [
                        {
                            "type": "reasoning",
                            "id": "rs_1",
                            "summary": [],
                            "encrypted_content": "gAAA",
                        }
                    ]
                },
                "reasoning_items",
            ),
            ({"input": [{"type": "compaction", "encrypted_content": "gAAA"}]}, "encrypted_content"),
            (
                {
                    "input": [
                        {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}
                    ]
                },
                "input_file",
            ),
            ({"input": user_image("https://example.com/cat.png")}, "unmeasured_image"),
            (
                {
                    "input": [
                        {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                    ]
                },
                "unmeasured_image",
            ),
            (
                {
                    "input": [
                        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                    ]
                },
                "audio",
            ),
            ({"input": "hi", "tools": [{"type": "web_search"}]}, "hosted_tools"),
            (
                {"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]},
                "hosted_tools",
            ),
            (
                {
                    "input": "hi",
                    "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
                },
                "hosted_tools",
            ),
            ({"input": "hi", "tools": [{"type": "mcp", "server_label": "x"}]}, "hosted_tools"),
            ({"input": "hi", "tools": [{"type": "image_generation"}]}, "hosted_tools"),
            ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "hosted_tools"),
        ],
    )
    def test_responses_context_the_client_cannot_see(
        self, kwargs: dict[str, Any], reason: str
    ) -> None:
        """Each kind of invisible context makes the estimate incomplete and is named."""
        result = estimate(model="gpt-4o", **kwargs)

        assert result.complete is False
        assert reason in result.reasons

    @pytest.mark.parametrize(
        ("message", "reason"),
        [
            (
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
                    ],
                },
                "audio",
            ),
            (
                {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]},
                "input_file",
            ),
            (
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}],
                },
                "unmeasured_image",
            ),
        ],
    )
    def test_chat_context_the_client_cannot_see(self, message: dict[str, Any], reason: str) -> None:
        """Chat audio, files and remote images are named as unmeasured."""
        result = estimate(model="gpt-4o", messages=[message])

        assert (result.complete, reason in result.reasons) == (False, True)

    def test_compaction_is_never_complete(self) -> None:
        """The compaction pass adds its own hidden prompt."""
        _, complete, reasons = count_request_input("responses.compact", {"input": "hi"}, "gpt-4o")

        assert (complete, reasons) == (False, ("compaction_prompt",))

    def test_plain_request_is_complete(self) -> None:
        """A plain text request has nothing hidden."""
        result = estimate(model="gpt-4o", input="hi")

        assert (result.complete, result.reasons) == (True, ())


class TestImages:
    @pytest.mark.parametrize(
        ("model", "detail", "size", "image_tokens"),
        [
            ("gpt-4o", "auto", (1024, 1024), 85 + 170 * 4),  # 768x768 after scaling: 2x2 tiles
            ("gpt-4o", "low", (1024, 1024), 85),
            ("gpt-4o", "high", (4096, 2048), 85 + 170 * 6),  # 2048x1024 -> 1536x768: 3x2 tiles
            ("gpt-5", "auto", (512, 512), 70 + 140),
            ("gpt-4.1-nano", "auto", (540, 360), 502),  # ceil(17*12 * 2.46)
            ("gpt-4.1-mini", "auto", (64, 64), 7),  # ceil(4 * 1.62)
        ],
    )
    def test_data_url_png_is_measured(
        self, model: str, detail: str, size: tuple[int, int], image_tokens: int
    ) -> None:
        """A data-URL image is decoded for its size and priced by the model's tile/patch rule."""
        text_only = estimate(
            model=model,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}]}],
        )

        result = estimate(model=model, input=user_image(data_url(png(*size)), detail))

        assert result.complete
        assert result.input_tokens - text_only.input_tokens == image_tokens

    def test_chat_image_url_part_is_measured(self) -> None:
        """Chat ``image_url`` parts with a data URL are measured too."""
        part = {
            "type": "image_url",
            "image_url": {"url": data_url(png(512, 512)), "detail": "high"},
        }

        result = estimate(model="gpt-4o", messages=[{"role": "user", "content": [part]}])

        assert (result.complete, result.input_tokens) == (True, 3 + 1 + 85 + 170 + 3)

    @pytest.mark.parametrize(
        ("data", "mime"),
        [
            (b"GIF89a" + struct.pack("<HH", 300, 200) + bytes(20), "image/gif"),
            (
                b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08"
                + struct.pack(">HH", 200, 300)
                + bytes(20),
                "image/jpeg",
            ),
            (
                b"RIFF\x00\x00\x00\x00WEBPVP8X"
                + bytes(8)
                + (299).to_bytes(3, "little")
                + (199).to_bytes(3, "little"),
                "image/webp",
            ),
        ],
        ids=["gif", "jpeg", "webp"],
    )
    def test_other_formats_are_measured(self, data: bytes, mime: str) -> None:
        """GIF, JPEG and WEBP headers give 300x200 with the standard library alone."""
        assert image_size(data_url(data, mime)) == (300, 200)


class TestOutputBound:
    def test_default_bound(self) -> None:
        """Without a limit the worst case uses DEFAULT_MAX_OUTPUT_TOKENS, and says so."""
        result = estimate(model="gpt-4o", input="hi")

        assert (result.max_output_tokens, result.output_bound_from_request) == (
            DEFAULT_MAX_OUTPUT_TOKENS,
            False,
        )
        assert DEFAULT_MAX_OUTPUT_TOKENS == 4096

    @pytest.mark.parametrize("key", ["max_output_tokens", "max_completion_tokens", "max_tokens"])
    def test_request_bound(self, key: str) -> None:
        """The request's own output limit is the bound."""
        bound: dict[str, Any] = {key: 123}
        result = estimate(model="gpt-4o", input="hi", **bound)

        assert (result.max_output_tokens, result.output_bound_from_request) == (123, True)


class TestCost:
    """Worst cases computed by hand from published rates (USD per 1M tokens)."""

    def test_cost_is_padded_input_plus_bounded_output(self) -> None:
        """
        gpt-4o-mini at an explicit standard tier ($0.15 in, $0.60 out): "Hello there, how are
        you?" is 3 + 1 + 7 + 3 = 14 tokens, reserved with the 5 % + 64 margin (1 + 64) = 79.
        """
        result = estimate(
            model="gpt-4o-mini",
            input="Hello there, how are you?",
            max_output_tokens=200,
            service_tier="default",
        )

        assert result.input_tokens == 14
        assert result.cost_usd == (79 * Decimal("0.15") + 200 * Decimal("0.60")) / 10**6
        assert result.price_source == "genai-prices"

    @pytest.mark.parametrize(
        ("tier", "rates"),
        [
            ("flex", ("0.625", "5")),
            ("default", ("1.25", "10")),
            ("priority", ("2.5", "20")),
            (None, ("2.5", "20")),  # no tier: the project may serve it at priority
            ("auto", ("2.5", "20")),
        ],
    )
    def test_service_tier_prices(self, tier: str | None, rates: tuple[str, str]) -> None:
        """gpt-5, input "hi" = 3 + 1 + 1 + 2 = 7 tokens, 72 with the margin, 10 output tokens."""
        result = estimate(model="gpt-5", input="hi", max_output_tokens=10, service_tier=tier)

        assert result.input_tokens == 7
        assert result.cost_usd == (72 * Decimal(rates[0]) + 10 * Decimal(rates[1])) / 10**6

    def test_unknown_model_has_no_cost(self) -> None:
        """An unpriced model still gets a token estimate, with cost_usd None (never an error)."""
        result = estimate(model="my-private-model-9000", input="hi")

        assert isinstance(result, Estimate)
        assert (result.cost_usd, result.price_source, result.input_tokens > 0) == (None, None, True)

    def test_audio_without_an_audio_rate_has_no_cost(self) -> None:
        """
        Audio asked of a model whose source has no audio rate: no bound exists, so the estimate
        says so (cost_usd None, reason ``audio_unpriced``) instead of pricing audio as text.
        """
        result = estimate(
            model="gpt-4o-audio-preview",
            messages=[{"role": "user", "content": "hi"}],
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
        )

        assert (result.cost_usd, "audio_unpriced" in result.reasons) == (None, True)


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"model": 42, "input": "hi"}, "model"),
            ({"model": "", "input": "hi"}, "model"),
            ({"model": "gpt-4o", "input": "hi", "max_output_tokens": -1}, "max_output_tokens"),
            ({"model": "gpt-4o", "input": "hi", "max_output_tokens": 1.5}, "max_output_tokens"),
            ({"model": "gpt-4o", "input": "hi", "max_output_tokens": True}, "max_output_tokens"),
            ({"model": "gpt-4o", "input": 42}, "input"),
            ({"model": "gpt-4o", "messages": "hello"}, "messages"),
            ({"model": "gpt-4o", "input": "hi", "tools": {"type": "function"}}, "tools"),
        ],
    )
    def test_rejected_with_the_problem_named(self, kwargs: dict[str, Any], match: str) -> None:
        """Invalid arguments raise ConfigurationError naming the argument."""
        with pytest.raises(ConfigurationError, match=match):
            estimate(**kwargs)


class TestMemo:
    def test_only_new_content_is_tokenized(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Re-estimating a conversation with one more message encodes only that message."""
        real = encoding_for("gpt-4o")
        encoded: list[str] = []

        class Spy:
            name = real.name

            def encode_ordinary(self, text: str) -> list[int]:
                encoded.append(text)
                return real.encode_ordinary(text)

        monkeypatch.setitem(input_count_module._ENCODINGS, "o200k_base", Spy())
        input_count_module._count.cache_clear()
        history = [
            {"role": "user", "content": f"message number {i} with its own text"} for i in range(10)
        ]
        estimate(model="gpt-4o", input=history, instructions="Be brief.")
        encoded.clear()

        estimate(
            model="gpt-4o",
            input=[*history, {"role": "user", "content": "the new one"}],
            instructions="Be brief.",
        )

        assert encoded == ["the new one"]
        input_count_module._count.cache_clear()

    def test_memo_is_bounded(self) -> None:
        """The memo is an LRU with a fixed size, so long-running processes do not grow."""
        assert input_count_module._count.cache_info().maxsize == 8192


class TestOutputTokens:
    def test_deltas_are_joined_before_counting(self) -> None:
        """Streamed deltas count as the text they form (a token can straddle two deltas)."""
        assert output_tokens_of(["Hel", "lo, wor", "ld!"], "gpt-4o") == count_tokens(
            "Hello, world!", model="gpt-4o"
        )
        assert output_tokens_of([], "gpt-4o") == 0


class Node(BaseModel):
    """A tree node: a valid recursive model (its JSON schema refers to itself)."""

    name: str
    children: list[Node] = []


class TestRecursiveSchemas:
    def test_pydantic_function_tool_on_a_recursive_model(self) -> None:
        """
        ``openai.pydantic_function_tool`` on a recursive model renders a ``$defs`` cycle: the
        estimate is marked incomplete and counts the tool as its compact JSON (an over-count).
        """
        tool = openai.pydantic_function_tool(Node)
        messages = [{"role": "user", "content": "hi"}]
        plain = estimate(model="gpt-4o", messages=messages)

        result = estimate(model="gpt-4o", messages=messages, tools=[tool])

        assert (result.complete, result.reasons) == (False, ("recursive_schema",))
        as_json = json.dumps(tool["function"], separators=(",", ":"))
        assert result.input_tokens >= plain.input_tokens + count_tokens(as_json, model="gpt-4o")

    @pytest.mark.parametrize(
        "parameters",
        [
            {  # the root refers to itself
                "type": "object",
                "properties": {"next": {"$ref": "#"}, "value": {"type": "string"}},
            },
            {  # two definitions refer to each other
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/A"}},
                "$defs": {
                    "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
                    "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}},
                },
            },
        ],
        ids=["root", "mutual"],
    )
    def test_responses_schema_cycles(self, parameters: dict[str, Any]) -> None:
        """Cycles through ``#`` or between definitions are bounded, never a RecursionError."""
        tool = {"type": "function", "name": "walk", "parameters": parameters}

        result = estimate(model="gpt-5", input="hi", tools=[tool])

        assert (result.complete, "recursive_schema" in result.reasons) == (False, True)
        assert result.cost_usd is not None

    def test_acyclic_refs_still_render_exactly(self) -> None:
        """A ``$ref`` used twice without a cycle is rendered, and the estimate stays complete."""
        parameters = {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/P"}, "b": {"$ref": "#/$defs/P"}},
            "$defs": {"P": {"type": "object", "properties": {"x": {"type": "string"}}}},
        }

        result = estimate(
            model="gpt-5",
            input="hi",
            tools=[{"type": "function", "name": "f", "parameters": parameters}],
        )

        assert (result.complete, result.reasons) == (True, ())

    def test_any_walk_failure_is_an_incomplete_over_count(self) -> None:
        """A body shape the walk trips on still gives a bound: the body's JSON, marked."""
        body = {"input": "hi", "tools": [{"type": "function", "function": "not a mapping"}]}

        tokens, complete, reasons = count_request_input("responses", body, "gpt-4o")

        assert (complete, reasons) == (False, ("estimator_error:AttributeError",))
        assert tokens == count_tokens(json.dumps(body, separators=(",", ":")), model="gpt-4o")

    def test_recursive_tool_in_a_budget_is_sent_and_metered(self) -> None:
        """Over real HTTP, inside a budget: the call goes through (no UnknownModelError)."""
        with FakeOpenAI() as server:
            client = costmeter.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
            with costmeter.budget("1.00") as cap:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    tools=[openai.pydantic_function_tool(Node)],
                    max_completion_tokens=50,
                )

        assert (server.calls, cap.calls) == (1, 1)
        assert cap.spent_usd > 0


class TestEmbeddingsAndCompletions:
    def test_embeddings_have_no_message_framing(self) -> None:
        """``["test CSV"]`` on ada-002 is billed 2 tokens ("test", " CSV"), not 9."""
        result = estimate(model="text-embedding-ada-002", input=["test CSV"])

        assert (result.api, result.input_tokens, result.complete) == ("embeddings", 2, True)
        assert result.max_output_tokens == 0
        # $0.10 per 1M; 2 tokens + the 1 + 64 token margin; no priority price for embeddings.
        assert result.cost_usd == 67 * Decimal("0.10") / 10**6

    def test_embedding_token_arrays_count_their_length(self) -> None:
        """Token-id inputs are billed one token per id."""
        one = estimate(model="text-embedding-3-small", input=[1, 2, 3])
        many = estimate(model="text-embedding-3-small", input=[[1, 2, 3], [4]])

        assert (one.input_tokens, many.input_tokens) == (3, 4)

    def test_legacy_prompt_counts_as_given(self) -> None:
        """Legacy completions bill the prompt's own tokens, inferred from a str prompt."""
        result = estimate(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")

        expected = count_tokens("Say this is a test", model="gpt-3.5-turbo-instruct")
        assert (result.api, result.input_tokens, result.max_output_tokens) == (
            "completions",
            expected,
            16,
        )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"prompt": "a", "n": 0}, "n"),
            ({"prompt": "a", "best_of": "3"}, "best_of"),
            ({"prompt": {"id": "x"}}, "prompt"),
        ],
    )
    def test_bad_legacy_arguments(self, kwargs: dict[str, Any], match: str) -> None:
        """n/best_of must be ints >= 1 and a legacy prompt a str or list."""
        with pytest.raises(ConfigurationError, match=match):
            estimate(model="gpt-3.5-turbo-instruct", api="completions", **kwargs)


class TestEndpointRegistry:
    def test_explicit_api_wins_over_inference(self) -> None:
        """``api="chat.completions"`` counts messages as Chat even for an embedding-like name."""
        result = estimate(
            model="gpt-4o", api="chat.completions", messages=[{"role": "user", "content": "hi"}]
        )

        assert (result.api, result.input_tokens) == ("chat.completions", 8)

    def test_unknown_api_is_named(self) -> None:
        """An api nobody registered is a ConfigurationError listing the known ones."""
        with pytest.raises(ConfigurationError, match=r"telepathy"):
            estimate(model="dall-e-3", api="telepathy", prompt="a cat")

    def test_an_endpoint_plugs_in_its_own_estimator(self) -> None:
        """register_estimator adds an api without touching estimate()."""

        def images(body: dict[str, Any], model: str) -> Estimate:
            return Estimate(
                model=model,
                input_tokens=0,
                max_output_tokens=0,
                output_bound_from_request=True,
                cost_usd=Decimal("0.04") * body.get("n", 1),
                complete=True,
                reasons=(),
                price_source="test",
                api="images.test",
            )

        register_estimator("images.test", images)
        try:
            result = estimate(model="dall-e-3", api="images.test", prompt="a cat", n=2)
        finally:
            estimate_module._ESTIMATORS.pop("images.test")

        assert (result.api, result.cost_usd) == ("images.test", Decimal("0.08"))


class TestImageMemory:
    def test_data_urls_are_not_retained(self) -> None:
        """
        40 distinct ~1 MB data-URL images (PNG, and JPEG whose frame header sits after a large
        block, the slow path): after they are dropped, the estimator holds almost nothing.
        """
        jpeg_head = b"\xff\xd8" + b"\xff\xe1" + (60_000).to_bytes(2, "big") + bytes(59_998)
        jpeg_tail = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 200, 300) + bytes(20)

        def image(i: int) -> str:
            noise = i.to_bytes(4, "big") * 250_000
            if i % 2:
                return data_url(jpeg_head + jpeg_tail + noise, "image/jpeg")
            return data_url(png(8, 8) + noise)

        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(40):
                result = estimate(model="gpt-4o", input=user_image(image(i)))
                assert result.complete
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

        assert retained < 2_000_000, f"{retained:,} bytes retained after 40 MB of images"


class TestPricesFile:
    def test_missing_file_is_named(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A missing COSTMETER_PRICES_FILE is a PricesFileError naming it, not an unknown model."""
        path = tmp_path / "nope.toml"
        monkeypatch.setenv(PRICES_FILE_ENV, str(path))

        with pytest.raises(costmeter.PricesFileError, match=r"nope\.toml") as info:
            estimate(model="gpt-4o", input="hi")

        assert info.value.path == str(path)
        assert isinstance(info.value, ConfigurationError)
        assert not isinstance(info.value, costmeter.UnknownModelError)

    @pytest.mark.parametrize(
        ("name", "text", "problem"),
        [
            ("bad.json", "{not json", "cannot parse"),
            ("bad.toml", "[gpt-4o\ninput = 1", "cannot parse"),
            ("list.json", "[1, 2]", "mapping"),
            ("entry.json", '{"my-model": {"input": "1"}}', "need 'output'"),
            ("price.json", '{"my-model": {"input": "x", "output": "1"}}', "number"),
        ],
    )
    def test_malformed_file_is_named(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        name: str,
        text: str,
        problem: str,
    ) -> None:
        """Every kind of malformed file names the file and the problem, for any model."""
        path = tmp_path / name
        path.write_text(text)
        monkeypatch.setenv(PRICES_FILE_ENV, str(path))

        with pytest.raises(costmeter.PricesFileError, match=problem) as info:
            costmeter.price_of("gpt-4o")

        assert str(path) in str(info.value)


@pytest.mark.parametrize("model", ["gpt-5-mini", "gpt-4"])  # o200k_base, cl100k_base
def test_roles_counted_without_the_tokenizer_are_one_token_each(model: str) -> None:
    encoding = encoding_for(model)
    assert {
        role: len(encoding.encode_ordinary(role)) for role in input_count_module.ONE_TOKEN_ROLES
    } == dict.fromkeys(input_count_module.ONE_TOKEN_ROLES, 1)


def test_a_role_outside_the_one_token_set_is_tokenized() -> None:
    def tokens(role: str) -> int:
        body = {"messages": [{"role": role, "content": "hi"}]}
        return count_request_input("chat.completions", body, "gpt-5-mini")[0]

    role = "moderator-of-everything"
    extra = len(encoding_for("gpt-5-mini").encode_ordinary(role)) - 1
    assert extra > 0
    assert tokens(role) - tokens("user") == extra
