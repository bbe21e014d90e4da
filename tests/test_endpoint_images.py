"""
The Images API (``images.generate``, ``images.edit``, ``images.variation``): GPT Image token
pricing, the DALL·E per-image table, the worst case before sending, and one event per call,
through the metered clients over real loopback HTTP (`costmeter.testing.FakeOpenAI`).

Published rates used below, USD per 1M tokens (OpenAI pricing page, via genai-prices):
gpt-image-1 text in 5, cached text 1.25, image in 10, cached image 2.5, image out 40;
gpt-image-1.5 text in 5, image in 8, image out 32, text out 10; gpt-image-2 text in 5,
image in 8, out 30. DALL·E per image: dall-e-3 standard 1024x1024 0.040, 1792x1024 0.080,
hd 1024x1024 0.080, hd 1792x1024 0.120; dall-e-2 256 0.016, 512 0.018, 1024 0.020.
The fake's usage rules are in `costmeter.testing._images`'s docstring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter._endpoints import FilePart, Request
from costmeter._endpoints.images import (
    ImageEditEndpoint,
    ImageGenerateEndpoint,
    ImageVariationEndpoint,
    gpt_image_output_tokens,
)
from costmeter._observe import Observation
from costmeter._usage import Usage
from costmeter.testing import FakeOpenAI

from .helpers import calls, money

M = Decimal(1_000_000)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
GENERATE = ImageGenerateEndpoint()
EDIT = ImageEditEndpoint()
VARIATION = ImageVariationEndpoint()


@pytest.fixture(autouse=True)
def _clean(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    assert ([], 0) == (server.errors, server.pending_faults)


def _kwargs(server: FakeOpenAI) -> dict[str, Any]:
    return {"api_key": "sk-test-images", "base_url": server.base_url, "max_retries": 0}


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[costmeter.OpenAI]:
    metered = costmeter.OpenAI(**_kwargs(server), always_estimate=True)  # estimates checked
    yield metered
    metered.close()


@pytest.fixture
async def aclient(server: FakeOpenAI) -> AsyncIterator[costmeter.AsyncOpenAI]:
    metered = costmeter.AsyncOpenAI(**_kwargs(server), always_estimate=True)
    yield metered
    await metered.close()


def _request(api: str, body: dict[str, Any], *, files: int = 0, stream: bool = False) -> Request:
    parts = tuple(FilePart("image[]", f"{i}.png", PNG, "image/png") for i in range(files))
    path = {"images.generate": "generations", "images.edit": "edits"}.get(api, "variations")
    return Request(api, "post", f"/images/{path}", body, files=parts, stream=stream)


def _image(name: str = "in.png") -> tuple[str, bytes, str]:
    return (name, PNG, "image/png")


# -- published output-token rules ---------------------------------------------------------------


class TestOutputTokens:
    @pytest.mark.parametrize(
        ("size", "quality", "tokens"),
        [
            ("1024x1024", "low", 272),
            ("1024x1024", "medium", 1056),
            ("1024x1024", "high", 4160),
            ("1024x1536", "low", 408),
            ("1024x1536", "high", 6240),
            ("1536x1024", "medium", 1568),
            ("1536x1024", "high", 6208),
        ],
    )
    def test_gpt_image_1_table(self, size: str, quality: str, tokens: int) -> None:
        """OpenAI's image guide table, the same for gpt-image-1, -1-mini and -1.5."""
        for model in ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"):
            assert tokens == gpt_image_output_tokens(model, size, quality)

    def test_auto_means_the_dearest(self) -> None:
        """size auto: the dearest standard size; quality auto: high."""
        assert 6240 == gpt_image_output_tokens("gpt-image-1", "auto", "auto")
        assert 6240 == gpt_image_output_tokens("gpt-image-1", None, None)
        assert 1584 == gpt_image_output_tokens("gpt-image-1", None, "medium")

    def test_gpt_image_2_published_points(self) -> None:
        """OpenAI's calculator: 1024x1024 high 7024, 1536x1024 high 5488."""
        assert 7024 == gpt_image_output_tokens("gpt-image-2", "1024x1024", "high")
        assert 5488 == gpt_image_output_tokens("gpt-image-2", "1536x1024", "high")
        assert 7024 == gpt_image_output_tokens("gpt-image-2-2026-04-21", "auto", None)

    def test_gpt_image_2_out_of_range_size_is_bounded_by_the_largest(self) -> None:
        """A size beyond the limits is bounded by 2880x2880 (8,294,400 px), the dearest:
        96 x 96 x (2,000,000 + 8,294,400) / 4,000,000 = 23,718.3 -> 23,719."""
        assert 23719 == gpt_image_output_tokens("gpt-image-2", "9999x9999", "high")
        assert 23719 == gpt_image_output_tokens("gpt-image-2", "3840x1000", "high")  # > 3:1

    def test_no_rule_no_number(self) -> None:
        """Qualities beyond high on gpt-image-2.5 and unknown families have no published rule."""
        assert gpt_image_output_tokens("gpt-image-2.5-flare", None, "xhigh") is None
        assert gpt_image_output_tokens("gpt-image-9", None, None) is None


# -- the worst case before sending --------------------------------------------------------------


class TestEstimate:
    def test_gpt_image_1_n4_high(self) -> None:
        """n=4, high, size auto (portrait 6,240 tokens); prompt 'a cat' = 2 tokens + 6."""
        reserve = GENERATE.estimate(
            _request("images.generate", {"model": "gpt-image-1", "prompt": "a cat", "n": 4})
        )
        expected = 4 * (8 * Decimal(5) + 6240 * Decimal(40)) / M  # 0.99856
        assert (expected, 8, True) == (reserve.cost_usd, reserve.input_tokens, reserve.complete)

    def test_partial_images_add_100_tokens_each(self) -> None:
        body = {"model": "gpt-image-1", "prompt": "a cat", "quality": "low", "size": "1024x1024"}
        streamed = GENERATE.estimate(
            _request("images.generate", {**body, "partial_images": 3}, stream=True)
        )
        assert (8 * Decimal(5) + (272 + 300) * Decimal(40)) / M == streamed.cost_usd
        # a stream without partial_images still reserves one partial image's 100 tokens
        bare = GENERATE.estimate(_request("images.generate", body, stream=True))
        assert (8 * Decimal(5) + (272 + 100) * Decimal(40)) / M == bare.cost_usd

    def test_gpt_image_2_text_output_allowance(self) -> None:
        """gpt-image-2 thinks in text: 1,024 text tokens per image are allowed, at $30 like its
        image output (genai-prices publishes one output rate for it)."""
        reserve = GENERATE.estimate(
            _request(
                "images.generate",
                {"model": "gpt-image-2", "prompt": "a cat", "size": "1024x1024", "quality": "high"},
            )
        )
        assert (8 * Decimal(5) + (7024 + 1024) * Decimal(30)) / M == reserve.cost_usd

    def test_edit_counts_every_input_image_and_n(self) -> None:
        """Multipart fields arrive as strings; each input image (mask too) is bounded by
        65 + 4 x 129 + 6,144 = 6,725 image tokens at high input fidelity and 64 text tokens;
        inputs bill once per output image. gpt-image-1.5: 1024x1024 medium = 1,056 image +
        1,024 text out."""
        body = {"model": "gpt-image-1.5", "prompt": "add a hat", "n": "2"}
        body |= {"size": "1024x1024", "quality": "medium", "input_fidelity": "high"}
        reserve = EDIT.estimate(_request("images.edit", body, files=3))
        text_in = 3 + 6 + 3 * 64
        image_in = 3 * 6725
        expected = (
            2 * (text_in * Decimal(5) + image_in * Decimal(8))
            + 2 * (1056 * Decimal(32) + 1024 * Decimal(10))
        ) / M
        assert (expected, text_in + image_in) == (reserve.cost_usd, reserve.input_tokens)

    def test_low_fidelity_inputs_have_no_surcharge(self) -> None:
        """gpt-image-1 without input_fidelity=high: at most 4 tiles, 65 + 4 x 129 = 581 image
        tokens per input image; gpt-image-2 has no switch and keeps the 6,725 bound."""
        body = {"model": "gpt-image-1", "prompt": "add a hat", "size": "1024x1024"}
        body |= {"quality": "low"}
        low = EDIT.estimate(_request("images.edit", body, files=2))
        assert ((3 + 6 + 128) * Decimal(5) + 1162 * Decimal(10) + 272 * Decimal(40)) / M == (
            low.cost_usd
        )
        two = EDIT.estimate(_request("images.edit", {**body, "model": "gpt-image-2"}, files=1))
        assert 3 + 6 + 64 + 6725 == two.input_tokens

    def test_dalle_worst_case(self) -> None:
        """dall-e-3 with size and quality unset: the dearest row (hd 1792x1024, $0.12)."""
        reserve = GENERATE.estimate(
            _request("images.generate", {"model": "dall-e-3", "prompt": "x", "n": 2})
        )
        assert Decimal("0.240") == reserve.cost_usd
        small = GENERATE.estimate(
            _request("images.generate", {"model": "dall-e-2", "prompt": "x", "size": "256x256"})
        )
        assert Decimal("0.016") == small.cost_usd

    def test_variation_defaults_to_dall_e_2(self) -> None:
        reserve = VARIATION.estimate(_request("images.variation", {"n": "3"}, files=1))
        assert Decimal("0.060") == reserve.cost_usd

    def test_unpriceable_requests_reserve_nothing(self) -> None:
        """No rule, no rates or no model: no number (a budget refuses, fail closed)."""
        for body in (
            {"model": "gpt-image-2.5-flare", "prompt": "x", "quality": "max"},
            {"model": "gpt-image-9", "prompt": "x"},
            {"prompt": "x"},
        ):
            reserve = GENERATE.estimate(_request("images.generate", body))
            assert reserve.cost_usd is None
            assert reserve.reasons


# -- pricing reported usage ---------------------------------------------------------------------


class TestPrice:
    def test_gpt_image_1_all_output_is_image(self) -> None:
        usage = Usage(input_tokens=396, image_input_tokens=388, output_tokens=1056)
        usage = Usage(**{**_fields(usage), "image_output_tokens": 1056})
        cost = GENERATE.price("gpt-image-1", usage, _request("images.generate", {}), None)
        assert (8 * Decimal(5) + 388 * Decimal(10) + 1056 * Decimal(40)) / M == cost.total_usd
        assert cost.total_usd == cost.input_usd + cost.cached_input_usd + cost.output_usd

    def test_empty_output_details_mean_all_image(self) -> None:
        """A streamed completed event with ``output_tokens_details: {}`` (seen in the wild):
        the 372 output tokens are image tokens, at gpt-image-1.5's $32, not its $10 text."""
        seen = Observation()
        GENERATE.observe(
            seen,
            {
                "type": "image_generation.completed",
                "usage": {
                    "input_tokens": 9,
                    "input_tokens_details": {"text_tokens": 9, "image_tokens": 0},
                    "output_tokens": 372,
                    "output_tokens_details": {},
                },
            },
        )
        assert seen.usage is not None
        cost = GENERATE.price("gpt-image-1.5", seen.usage, _request("images.generate", {}), None)
        assert (9 * Decimal(5) + 372 * Decimal(32)) / M == cost.total_usd

    def test_cached_tokens_text_first(self) -> None:
        """One cached count: taken from text first (the dearer split), rest from images."""
        usage = Usage(
            input_tokens=100, image_input_tokens=80, cached_input_tokens=30, output_tokens=0
        )
        cost = GENERATE.price("gpt-image-1", usage, _request("images.generate", {}), None)
        # text 20 all cached, image 80 of which 10 cached
        expected_cached = (20 * Decimal("1.25") + 10 * Decimal("2.5")) / M
        expected_input = 70 * Decimal(10) / M
        assert (expected_input, expected_cached) == (cost.input_usd, cost.cached_input_usd)

    def test_dalle_per_image(self) -> None:
        body = {"model": "dall-e-3", "size": "1792x1024", "quality": "hd"}
        cost = GENERATE.price("dall-e-3", Usage(images=3), _request("images.generate", body), None)
        assert (Decimal("0.360"), "dall-e-3") == (cost.total_usd, cost.priced_as)

    def test_dalle_unknown_size_is_not_guessed(self) -> None:
        body = {"model": "dall-e-2", "size": "2048x2048"}
        with pytest.raises(costmeter.PricingError, match="size"):
            GENERATE.price("dall-e-2", Usage(images=1), _request("images.generate", body), None)

    def test_token_model_without_tokens_is_not_free(self) -> None:
        """A GPT Image response without usage must not be billed $0 as 'images only'."""
        with pytest.raises(costmeter.PricingError):
            GENERATE.price("gpt-image-1", Usage(images=1), _request("images.generate", {}), None)

    def test_unknown_model(self) -> None:
        with pytest.raises(costmeter.UnknownModelError):
            GENERATE.price(
                "gpt-image-9", Usage(input_tokens=1), _request("images.generate", {}), None
            )


def _fields(usage: Usage) -> dict[str, Any]:
    return {name: getattr(usage, name) for name in usage.__slots__}


# -- observing the SDK's own objects, from the fake server, with the bare SDK --------------------


class TestObserve:
    def test_response_and_stream_events(self, server: FakeOpenAI) -> None:
        """ImagesResponse usage as reported; streamed completed events add up per image."""
        bare = openai.OpenAI(**_kwargs(server))
        seen = Observation()
        GENERATE.observe(
            seen, bare.images.generate(model="gpt-image-1", prompt="a red fox in snow", n=2)
        )
        assert (20, 0, 2112, 2112) == (
            seen.usage and seen.usage.input_tokens,
            seen.usage and seen.usage.image_input_tokens,
            seen.usage and seen.usage.output_tokens,
            seen.usage and seen.usage.image_output_tokens,
        )
        streamed = Observation()
        for event in bare.images.generate(
            model="gpt-image-1.5", prompt="a cat", stream=True, partial_images=2, n=2
        ):
            GENERATE.observe(streamed, event)
        assert streamed.usage == Usage(
            input_tokens=14, output_tokens=2 * 1256, image_output_tokens=2 * 1256
        )
        assert "completed" == streamed.status

    def test_dalle_counts_images(self, server: FakeOpenAI) -> None:
        bare = openai.OpenAI(**_kwargs(server))
        seen = Observation()
        GENERATE.observe(seen, bare.images.generate(model="dall-e-3", prompt="x", n=3))
        assert Usage(images=3) == seen.usage


# -- end to end, through the metered clients ----------------------------------------------------


class TestGenerate:
    def test_gpt_image_reported_usage(self, client: costmeter.OpenAI, server: FakeOpenAI) -> None:
        """gpt-image-1.5, n=2, 200 text tokens per image: text in 20, image out 2,112, text
        out 400 -> 20 x 5 + 2,112 x 32 + 400 x 10 per 1M = $0.071684."""
        with capture_logs() as logs:
            result = client.images.generate(
                model="gpt-image-1.5",
                prompt="a red fox in snow",
                n=2,
                extra_headers={"x-fake-text-tokens": "200"},
            )

        assert 2 == len(result.data or [])
        [event] = calls(logs)
        assert {"api": "images.generate", "model": "gpt-image-1.5", "outcome": "ok"}.items() <= (
            event.items()
        )
        assert "reported" == event["usage_source"]
        assert Decimal("0.071684") == money(event["cost_usd"])
        assert money(event["estimated_cost_usd"]) >= money(event["cost_usd"])
        assert 2112 == event["image_output_tokens"]

    def test_cached_input(self, client: costmeter.OpenAI) -> None:
        """Cached tokens at the cache rate: prompt of 40 chars -> 16 text tokens, 5 cached:
        11 x 5 + 5 x 1.25 + 1,056 x 40 per 1M = $0.04230125."""
        with capture_logs() as logs:
            client.images.generate(
                model="gpt-image-1",
                prompt="a lighthouse on a cliff at dawn, in oils",
                extra_headers={"x-fake-cached-tokens": "5"},
            )

        [event] = calls(logs)
        assert 5 == event["cached_input_tokens"]
        assert Decimal("0.04230125") == money(event["cost_usd"])

    def test_stream_with_partial_images(self, client: costmeter.OpenAI) -> None:
        """Streamed, 2 partial images: 1,056 + 200 image tokens -> 7 x 5 + 1,256 x 40 per 1M."""
        with capture_logs() as logs:
            events = list(
                client.images.generate(
                    model="gpt-image-1", prompt="a cat", stream=True, partial_images=2
                )
            )

        assert ["partial_image", "partial_image", "completed"] == [
            e.type.rsplit(".", 1)[1] for e in events
        ]
        [event] = calls(logs)
        assert (True, Decimal("0.050275")) == (event["stream"], money(event["cost_usd"]))
        assert money(event["estimated_cost_usd"]) >= money(event["cost_usd"])

    def test_dalle_3_per_image(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            client.images.generate(
                model="dall-e-3", prompt="a lamp", size="1792x1024", quality="hd", n=1
            )

        [event] = calls(logs)
        assert (1, Decimal("0.120")) == (event["images"], money(event["cost_usd"]))
        assert "reported" == event["usage_source"]

    def test_raw_response(self, client: costmeter.OpenAI) -> None:
        """with_raw_response: the JSON body is observed; same cost as the parsed call."""
        with capture_logs() as logs:
            raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt="a cat")
            raw.parse()

        [event] = calls(logs)
        assert Decimal("0.042275") == money(event["cost_usd"])  # 7 x 5 + 1,056 x 40 per 1M

    def test_streaming_response(self, client: costmeter.OpenAI) -> None:
        """with_streaming_response on a stream: the raw SSE events are observed."""
        with capture_logs() as logs:
            with client.images.with_streaming_response.generate(
                model="gpt-image-1", prompt="a cat", stream=True
            ) as response:
                for _ in response.iter_lines():
                    pass

        [event] = calls(logs)
        assert ("reported", Decimal("0.042275")) == (
            event["usage_source"],
            money(event["cost_usd"]),
        )

    def test_stream_cut_before_completed_bills_the_worst_case(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """No completed event, no usage: the request's worst case is billed, flagged
        estimated. gpt-image-1.5, 1024x1024 low, 1 partial: 8 text in, 272 + 100 image out,
        1,024 text out -> 8 x 5 + 372 x 32 + 1,024 x 10 per 1M = $0.022184."""
        server.cut_stream_next(after_events=1, path="/v1/images/generations")
        with capture_logs() as logs, pytest.raises(openai.APIConnectionError):
            for _ in client.images.generate(
                model="gpt-image-1.5",
                prompt="a cat",
                size="1024x1024",
                quality="low",
                stream=True,
                partial_images=1,
            ):
                pass

        [event] = calls(logs)
        assert "estimated" == event["usage_source"]
        assert Decimal("0.022184") == money(event["cost_usd"]) == money(event["estimated_cost_usd"])

    async def test_async_and_async_stream(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            await aclient.images.generate(model="gpt-image-1", prompt="a cat")
            stream = await aclient.images.generate(
                model="gpt-image-1", prompt="a cat", stream=True, partial_images=1
            )
            async for _ in stream:
                pass

        plain, streamed = calls(logs)
        assert Decimal("0.042275") == money(plain["cost_usd"])
        assert Decimal("0.046275") == money(streamed["cost_usd"])  # + 100 x 40 per 1M


class TestEdit:
    def test_multiple_images_and_mask(self, client: costmeter.OpenAI) -> None:
        """gpt-image-1, 2 images (+ mask, not counted by the fake): 8 text, 388 image in,
        1,056 out -> 8 x 5 + 388 x 10 + 1,056 x 40 per 1M = $0.04616."""
        with capture_logs() as logs:
            client.images.edit(
                model="gpt-image-1",
                prompt="add a hat",
                image=[_image("a.png"), _image("b.png")],
                mask=_image("mask.png"),
            )

        [event] = calls(logs)
        assert ("images.edit", Decimal("0.04616")) == (event["api"], money(event["cost_usd"]))
        assert 388 == event["image_input_tokens"]
        assert money(event["estimated_cost_usd"]) >= money(event["cost_usd"])

    def test_stream_gpt_image_2(self, client: costmeter.OpenAI) -> None:
        """image_edit.* events: 6 text, 194 image in, 1,056 out -> 6 x 5 + 194 x 8 +
        1,056 x 30 per 1M = $0.033262."""
        with capture_logs() as logs:
            for _ in client.images.edit(
                model="gpt-image-2", prompt="x", image=_image(), stream=True
            ):
                pass

        [event] = calls(logs)
        assert Decimal("0.033262") == money(event["cost_usd"])

    async def test_async_dalle_2(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            await aclient.images.edit(
                model="dall-e-2", prompt="x", image=_image(), size="512x512", n=2
            )

        [event] = calls(logs)
        assert Decimal("0.036") == money(event["cost_usd"])


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks variations
class TestVariation:
    def test_sync(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            client.images.create_variation(model="dall-e-2", image=_image(), n=3)

        [event] = calls(logs)
        assert ("images.variation", 3) == (event["api"], event["images"])
        assert Decimal("0.060") == money(event["cost_usd"])

    async def test_async(self, aclient: costmeter.AsyncOpenAI) -> None:
        with capture_logs() as logs:
            await aclient.images.create_variation(model="dall-e-2", image=_image(), size="256x256")

        [event] = calls(logs)
        assert Decimal("0.016") == money(event["cost_usd"])

    def test_without_model_is_dall_e_2(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs:
            client.images.create_variation(image=_image(), n=3)

        [event] = calls(logs)
        assert Decimal("0.060") == money(event["cost_usd"])


class TestBudgets:
    def test_refuses_n4_high_before_sending(
        self, client: costmeter.OpenAI, server: FakeOpenAI
    ) -> None:
        """Worst case of n=4, quality high on gpt-image-1 is $0.99856: a $0.50 cap refuses it
        and nothing reaches the server."""
        with capture_logs() as logs, pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.50"):
                client.images.generate(model="gpt-image-1", prompt="a cat", n=4, quality="high")

        assert 0 == server.calls
        assert [] == calls(logs)

    async def test_async_refuses(self, aclient: costmeter.AsyncOpenAI, server: FakeOpenAI) -> None:
        with pytest.raises(costmeter.BudgetExceededError):
            with costmeter.budget("0.10"):
                await aclient.images.generate(model="dall-e-3", prompt="x", n=1)  # $0.12

        assert 0 == server.calls

    def test_spends_the_reported_cost(self, client: costmeter.OpenAI) -> None:
        with capture_logs() as logs, costmeter.budget("2") as b:
            client.images.generate(model="gpt-image-1", prompt="a cat", n=4, quality="high")

        assert money(calls(logs)[0]["cost_usd"]) == b.spent_usd
