"""
The Images API: ``images.generate``, ``images.edit`` and ``images.variation``.

Two billing schemes share these endpoints:

* **GPT Image models** (``gpt-image-1``, ``-1-mini``, ``-1.5``, ``gpt-image-2*``,
  ``chatgpt-image-latest``) report token ``usage``: text input tokens at the text input rate,
  image input tokens at the image input rate, output image tokens at the output image rate
  (genai-prices' ``output_image_tokens``, else ``output_tokens`` where a model publishes only one
  output rate, e.g. gpt-image-1's $40/MTok), output text tokens (gpt-image-1.5 and later "think"
  in text) at the text output rate, cached reads at the cache rates.
* **DALL·E 2 / 3** report no usage: they are priced per image by size and quality from the table
  below, counting the images the response returned.

The worst case before sending is the prompt + every input image + the largest output the
request allows: ``n`` (inputs are billed once per image, as if each were its own request),
``size`` (``auto``: the largest size auto can pick), ``quality`` (``auto``: ``high``), streamed
partial images, GIF frames. Every bound used where OpenAI publishes none is named and sourced
below, and chosen so that the bound is never below what the API bills.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar, Final

from costmeter._endpoints import Endpoint, Request, Reserve
from costmeter._endpoints._common import count, first_rates, parts_cost
from costmeter._errors import PricingError, UnknownModelError
from costmeter._money import ZERO, money_math
from costmeter._observe import Observation, field_of
from costmeter._pricing import Cost, normalize_tier
from costmeter._rates import UnitRates, unit_rates
from costmeter._usage import Usage

__all__ = [
    "DALLE_PRICES",
    "ENDPOINTS",
    "ImageEditEndpoint",
    "ImageGenerateEndpoint",
    "ImageVariationEndpoint",
    "gpt_image_output_tokens",
]

# -- DALL·E: USD per image ------------------------------------------------------------------------
# Source: OpenAI API pricing page, "Image generation" (https://openai.com/api/pricing/ and
# https://platform.openai.com/docs/pricing#image-generation), as published 2024-2025 until the
# models' retirement on 2026-05-12 (SDK `ImageModel` docstring). Cross-checked 2026-12-03 against
# third-party tables quoting it (docs.dev.xavier.icvr.xyz/models/openai/dall-e-{2,3}.html).
# Edits and variations (dall-e-2 only) cost the same per image as generations.
DALLE_PRICES: Final[Mapping[str, Mapping[tuple[str, str], Decimal]]] = {
    "dall-e-3": {
        ("1024x1024", "standard"): Decimal("0.040"),
        ("1024x1792", "standard"): Decimal("0.080"),
        ("1792x1024", "standard"): Decimal("0.080"),
        ("1024x1024", "hd"): Decimal("0.080"),
        ("1024x1792", "hd"): Decimal("0.120"),
        ("1792x1024", "hd"): Decimal("0.120"),
    },
    "dall-e-2": {
        ("256x256", "standard"): Decimal("0.016"),
        ("512x512", "standard"): Decimal("0.018"),
        ("1024x1024", "standard"): Decimal("0.020"),
    },
}
_DALLE_SOURCE: Final = "openai.com/api/pricing (DALL-E per-image table)"
_DALLE_DEFAULT_SIZE: Final = "1024x1024"  # the API's documented default for both models
_DALLE_DEFAULT_QUALITY: Final = "standard"  # dall-e-3's documented default; dall-e-2's only one

# -- GPT Image output tokens per image ------------------------------------------------------------
# gpt-image-1 family (gpt-image-1, -1-mini, -1.5): OpenAI image generation guide, "Cost and
# latency" table (https://platform.openai.com/docs/guides/image-generation#cost-and-latency),
# quoted in https://community.openai.com/t/.../1371851 (2026): square / portrait / landscape.
_GPT_IMAGE_1_OUTPUT: Final[Mapping[str, Mapping[str, int]]] = {
    "1024x1024": {"low": 272, "medium": 1056, "high": 4160},
    "1024x1536": {"low": 408, "medium": 1584, "high": 6240},
    "1536x1024": {"low": 400, "medium": 1568, "high": 6208},
}
# gpt-image-2 family (2, 2.5, 2.6): any WIDTHxHEIGHT (multiples of 16, aspect <= 3:1, at most
# 3840 px a side and 8,294,400 px). OpenAI's own calculator (image generation guide, "size and
# quality options") computes the tokens as below; the rule was extracted from it and published in
# https://community.openai.com/t/gpt-image-2-output-pricing-calculator-online-and-in-your-code/1382699
# (2026-06-05), and matches OpenAI's published points 1024x1024 high = 7024, 1536x1024 high = 5488.
_GPT_IMAGE_2_QUALITY_FACTOR: Final[Mapping[str, int]] = {"low": 16, "medium": 48, "high": 96}
_GPT_IMAGE_2_AREA_OFFSET: Final = 2_000_000
_GPT_IMAGE_2_AREA_SCALE: Final = 4_000_000
_GPT_IMAGE_2_MAX_PIXELS: Final = 8_294_400  # 2880x2880, the dearest allowed size
_GPT_IMAGE_2_MAX_SQUARE: Final = "2880x2880"
_GPT_IMAGE_2_MAX_EDGE: Final = 3840
# ``size="auto"`` lets the model choose among the standard sizes (SDK `size` docstring: "The
# standard sizes 1024x1024, 1536x1024 and 1024x1536 ... auto is supported for models that allow
# automatic sizing"); the worst case is the dearest of them.
_STANDARD_SIZES: Final = ("1024x1024", "1024x1536", "1536x1024")
# Each streamed partial image adds 100 output image tokens (OpenAI image generation guide,
# "Streaming": "each partial image costs an additional 100 image output tokens"). A stream
# without `partial_images` was seen billing 272 + 100 for one low 1024x1024 image
# (https://github.com/maximhq/bifrost/issues/4777, 2026-06-29): a stream reserves at least one.
_PARTIAL_IMAGE_TOKENS: Final = 100
_DEFAULT_GIF_FRAMES: Final = 9  # SDK `frame_count` docstring: "Defaults to 9 when omitted"

# -- bounds OpenAI does not publish (worst cases, never below what is billed) ---------------------
# Text input: the prompt as o200k_base counts it, plus a fixed overhead. Measured: generations
# bill prompt + 6 tokens on every model; edits add text tokens per input image (16-45 observed,
# growing with the image's aspect) (https://community.openai.com/t/.../1382940, 2026-06-25).
_PROMPT_OVERHEAD: Final = 6
_EDIT_TEXT_PER_IMAGE: Final = 64
# Image input per input image (image, mask, markup): OpenAI's guide prices gpt-image-1 family
# inputs as 65 + 129 per 512-px tile with the shortest side scaled to 512 px (at most 4 tiles
# inside the 2048-px box: 581), plus 4,096 (square) or 6,144 (other) tokens per image when
# ``input_fidelity="high"`` (https://community.openai.com/t/image-generation-high-fidelity-editing/1317649).
# gpt-image-2 has no fidelity switch and bills at most 1,536 32-px patches per image
# (https://community.openai.com/t/.../1382940): the high-fidelity bound covers it.
_INPUT_IMAGE_TILES_MAX: Final = 65 + 4 * 129
_INPUT_IMAGE_HIGH_FIDELITY: Final = _INPUT_IMAGE_TILES_MAX + 6144
# Output text ("thinking") tokens of gpt-image-1.5 and later: no published bound; ~200 observed
# per image (https://community.openai.com/t/gpt-image-1-5-images-api-returns-text-output-tokens/1369511).
_OUTPUT_TEXT_ALLOWANCE: Final = 1024
_NO_TEXT_OUTPUT: Final = ("gpt-image-1", "gpt-image-1-mini")

_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_IMAGE_FIELDS: Final = frozenset({"image", "mask", "markup"})
_COMPLETED_EVENTS: Final = frozenset({"image_generation.completed", "image_edit.completed"})
_PARTIAL_EVENTS: Final = frozenset({"image_generation.partial_image", "image_edit.partial_image"})
_GPT_IMAGE_SOURCE: Final = "genai-prices (image token rates)"


# -- request reading ------------------------------------------------------------------------------


def _int_field(body: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    """An integer request field (multipart sends it as a string), clamped to its allowed range."""
    value = body.get(key)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return min(max(value, low), high)


def _str_field(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _family(model: str) -> str | None:
    """``"dall-e"``, ``"gpt-image-1"`` (tables), ``"gpt-image-2"`` (formula), ``"chatgpt"``."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith("dall-e"):
        return "dall-e"
    if name.startswith("gpt-image-1"):
        return "gpt-image-1"
    if name.startswith("gpt-image-2"):
        return "gpt-image-2"
    if name.startswith("chatgpt-image"):
        return "chatgpt"  # the ChatGPT image model of the day: either rule may apply
    return None


def _dalle_key(model: str) -> str | None:
    name = model.lower().rsplit("/", 1)[-1]
    return next((key for key in DALLE_PRICES if name.startswith(key)), None)


def _input_images(request: Request) -> int:
    return sum(1 for part in request.files if part.field.removesuffix("[]") in _IMAGE_FIELDS)


def _gpt_image_2_tokens(quality: str, width: int, height: int) -> int:
    factor = _GPT_IMAGE_2_QUALITY_FACTOR[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_factor = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    area = factor * short_factor * (_GPT_IMAGE_2_AREA_OFFSET + width * height)
    return -(-area // _GPT_IMAGE_2_AREA_SCALE)  # ceiling division


def _valid_gpt_image_2_size(size: str | None) -> bool:
    """Within gpt-image-2's limits (SDK `size` docstring): else the API refuses it."""
    found = _SIZE.fullmatch(size or "")
    if not found:
        return False
    width, height = int(found[1]), int(found[2])
    return (
        min(width, height) > 0
        and max(width, height) <= _GPT_IMAGE_2_MAX_EDGE
        and width * height <= _GPT_IMAGE_2_MAX_PIXELS
        and max(width, height) <= 3 * min(width, height)
    )


def gpt_image_output_tokens(model: str, size: str | None, quality: str | None) -> int | None:
    """
    The most output image tokens one image of *model* at *size* and *quality* can bill.

    ``None``/``auto`` size means the dearest size ``auto`` can choose; ``None``/``auto`` quality
    means ``high``. An unknown size is bounded by the largest size the model accepts. Returns
    ``None`` where OpenAI publishes no rule (qualities beyond ``high``, unknown model families).
    """
    family = _family(model)
    quality = "high" if quality in (None, "auto") else quality
    if family == "chatgpt":
        first = gpt_image_output_tokens("gpt-image-1", size, quality)
        second = gpt_image_output_tokens("gpt-image-2", size, quality)
        return None if first is None or second is None else max(first, second)
    if family == "gpt-image-1":
        if quality not in _GPT_IMAGE_2_QUALITY_FACTOR:
            return None
        sizes = [size] if size in _GPT_IMAGE_1_OUTPUT else list(_GPT_IMAGE_1_OUTPUT)
        return max(_GPT_IMAGE_1_OUTPUT[s][quality] for s in sizes if s is not None)
    if family == "gpt-image-2":
        if quality not in _GPT_IMAGE_2_QUALITY_FACTOR:
            return None
        if size in (None, "auto"):
            candidates = list(_STANDARD_SIZES)
        else:
            candidates = [size if _valid_gpt_image_2_size(size) else _GPT_IMAGE_2_MAX_SQUARE]
        return max(
            _gpt_image_2_tokens(quality, *map(int, s.split("x", 1)))
            for s in candidates
            if s is not None
        )
    return None


# -- pricing ----------------------------------------------------------------------------------------


def _token_cost(rates: UnitRates, usage: Usage) -> Cost:
    """
    The exact cost of a GPT Image usage at *rates* (USD per token).

    Cached tokens are taken from the text part first: the API reports one ``cached_tokens``
    count, and text-first is the dearer split, so a cached read is never billed below its price.
    """
    rate_in = rates.get("input_tokens")
    if rate_in is None:
        raise PricingError(f"{rates.source} has no input token rate for {rates.priced_as!r}")
    rate_image_in = rates.get("input_image_tokens")
    rate_out = rates.get("output_tokens")
    rate_image_out = rates.get("output_image_tokens") or rate_out
    image_in = usage.image_input_tokens
    image_out = min(usage.image_output_tokens, usage.output_tokens)
    text_out = usage.output_tokens - image_out
    for tokens, rate, kind in (
        (image_in, rate_image_in, "image input"),
        (image_out, rate_image_out, "image output"),
        (text_out, rate_out, "output"),
    ):
        if tokens and rate is None:
            raise PricingError(f"{rates.source} has no {kind} rate for {rates.priced_as!r}")
    text_in = usage.input_tokens - image_in
    cached_text = min(usage.cached_input_tokens, text_in)
    cached_image = usage.cached_input_tokens - cached_text
    with money_math():
        input_usd = (text_in - cached_text) * rate_in + (image_in - cached_image) * (
            rate_image_in or ZERO
        )
        cached_usd = cached_text * (rates.get("cache_read_tokens") or rate_in) + cached_image * (
            rates.get("cache_image_read_tokens") or rate_image_in or ZERO
        )
        output_usd = image_out * (rate_image_out or ZERO) + text_out * (rate_out or ZERO)
    return parts_cost(
        source=_GPT_IMAGE_SOURCE,
        priced_as=rates.priced_as,
        input_usd=input_usd,
        cached_input_usd=cached_usd,
        output_usd=output_usd,
    )


def _dalle_price(key: str, size: str | None, quality: str | None) -> Decimal | None:
    table = DALLE_PRICES[key]
    size = _DALLE_DEFAULT_SIZE if size in (None, "auto") else size
    quality = _DALLE_DEFAULT_QUALITY if quality in (None, "auto") else quality
    return table.get((size or "", quality or ""))


def _dalle_worst(key: str, size: str | None, quality: str | None) -> Decimal:
    """The dearest per-image price the request can be billed (``auto``/unknown: the dearest)."""
    table = DALLE_PRICES[key]
    sizes = {s for s, _ in table}
    qualities = {q for _, q in table}
    return max(
        price
        for (row_size, row_quality), price in table.items()
        if (size not in sizes or size == row_size)
        and (quality not in qualities or quality == row_quality)
    )


# -- the endpoints --------------------------------------------------------------------------------


class _ImagesEndpoint(Endpoint):
    """What the three Images endpoints share: routing aside, they bill the same way."""

    def _models(self, request: Request) -> tuple[str, ...]:
        models = request.price_models()
        return models or ((self.default_model,) if self.default_model else ())

    def _planned(self, request: Request, model: str) -> tuple[Usage, list[str]] | None:
        """
        The worst-case usage of *request* on a GPT Image *model* (``None``: no rule bounds
        its output), and what the bound could not see.
        """
        from costmeter._tokenizer import count_tokens  # noqa: PLC0415  (tokenizer: lazy)

        body = request.body
        reasons: list[str] = []
        n = _int_field(body, "n", 1, 1, 10)
        per_image = gpt_image_output_tokens(
            model, _str_field(body, "size"), _str_field(body, "quality")
        )
        if per_image is None:
            return None
        if request.stream:  # at least one partial image's worth, even with partial_images=0
            per_image += _PARTIAL_IMAGE_TOKENS * _int_field(body, "partial_images", 1, 1, 3)
        if _str_field(body, "output_format") == "gif":
            per_image *= _int_field(body, "frame_count", _DEFAULT_GIF_FRAMES, 2, 16)
        if _str_field(body, "output_format") == "svg" or body.get("svg") is not None:
            reasons.append("svg authoring usage (svg_usage) is billed by another model")
        prompt = body.get("prompt")
        text = count_tokens(prompt, model=model) if isinstance(prompt, str) else 0
        images = _input_images(request)
        text += _PROMPT_OVERHEAD + _EDIT_TEXT_PER_IMAGE * images
        low_fidelity = (
            _family(model) == "gpt-image-1" and _str_field(body, "input_fidelity") != "high"
        )
        image_in = images * (_INPUT_IMAGE_TILES_MAX if low_fidelity else _INPUT_IMAGE_HIGH_FIDELITY)
        name = _DATE.sub("", model.lower().rsplit("/", 1)[-1])
        text_out = 0 if name in _NO_TEXT_OUTPUT else _OUTPUT_TEXT_ALLOWANCE
        usage = Usage(
            input_tokens=n * (text + image_in),
            image_input_tokens=n * image_in,
            output_tokens=n * (per_image + text_out),
            image_output_tokens=n * per_image,
        )
        return usage, reasons

    def estimate(self, request: Request) -> Reserve:
        """The dearest bill the request allows (see the module docstring for every bound)."""
        models = self._models(request)
        if not models:
            return Reserve(None, reasons=("no model named",))
        body = request.body
        dalle = _dalle_key(models[0])
        if dalle is not None:
            n = _int_field(body, "n", 1, 1, 10)
            worst = _dalle_worst(dalle, _str_field(body, "size"), _str_field(body, "quality"))
            with money_math():
                return Reserve(n * worst, input_tokens=0)
        found = first_rates(models)
        if found is None:
            return Reserve(None, reasons=(f"no image token rates known for {models[0]!r}",))
        model, rates = found
        planned = self._planned(request, model)
        if planned is None:
            quality = _str_field(body, "quality")
            return Reserve(
                None,
                reasons=(f"no published output-token rule for {model!r} at quality {quality!r}",),
            )
        usage, reasons = planned
        try:
            cost = _token_cost(rates, usage)
        except PricingError as exc:
            return Reserve(None, reasons=(str(exc),))
        n = _int_field(body, "n", 1, 1, 10)
        return Reserve(
            cost.total_usd,
            input_tokens=usage.input_tokens // n,
            complete=not reasons,
            reasons=tuple(reasons),
        )

    def observe(self, seen: Observation, obj: Any) -> None:
        """
        An ``ImagesResponse`` (or its JSON) or a stream event. GPT Image usage is recorded as
        reported; a response without usage (DALL·E) records the images it returned. Streamed
        ``*.completed`` events each carry one image's usage: they are added up.
        """
        seen.take(obj)  # request id, error events
        kind = field_of(obj, "type")
        if kind in _PARTIAL_EVENTS:
            return
        if kind in _COMPLETED_EVENTS:
            usage = _usage_of(field_of(obj, "usage"))
            if usage is not None:
                seen.take_usage(usage if seen.usage is None else _plus(seen.usage, usage))
            seen.take_status("completed")
            return
        data = field_of(obj, "data")
        if kind is None and (data is not None or field_of(obj, "created") is not None):
            usage = _usage_of(field_of(obj, "usage"))
            if usage is None and isinstance(data, list) and data:
                usage = Usage(images=len(data))
            if usage is not None:
                seen.take_usage(usage)
            seen.take_status("completed")

    def fallback_usage(self, request: Request, seen: Observation, estimated_input: int) -> Usage:
        """
        A response without usage (a stream cut before its ``completed`` event): bill the
        request's worst case, the most the API can have billed for what was asked.
        """
        models = self._models(request)
        model = models[0] if models else (seen.response_model or "")
        if _dalle_key(model) is not None:
            return Usage(images=_int_field(request.body, "n", 1, 1, 10))
        planned = self._planned(request, model)
        if planned is None:
            return Usage(input_tokens=estimated_input)
        return planned[0]

    def price(self, model: str, usage: Usage, request: Request, service_tier: str | None) -> Cost:
        """DALL·E per image by the request's size and quality; GPT Image models per token."""
        tier = normalize_tier(service_tier)
        if tier != "default":
            raise UnknownModelError(model, ("genai-prices", _DALLE_SOURCE), tier)
        body = request.body
        dalle = _dalle_key(model)
        if dalle is not None:
            size, quality = _str_field(body, "size"), _str_field(body, "quality")
            per_image = _dalle_price(dalle, size, quality)
            if per_image is None:
                raise PricingError(
                    f"no {dalle} price for size {size!r} at quality {quality!r} "
                    f"(priced sizes: {sorted({s for s, _ in DALLE_PRICES[dalle]})})"
                )
            with money_math():
                total = usage.images * per_image
            return parts_cost(source=_DALLE_SOURCE, priced_as=dalle, output_usd=total)
        rates = unit_rates(model)
        if rates is None:
            raise UnknownModelError(model, ("genai-prices",))
        if usage.images and not (usage.input_tokens or usage.output_tokens):
            raise PricingError(f"{model!r} is priced per token, but the response reported none")
        return _token_cost(rates, usage)


def _usage_of(usage: Any) -> Usage | None:
    """A GPT Image ``usage`` object (SDK model or dict) as a `Usage`; ``None`` when absent."""
    if usage is None:
        return None
    in_details = field_of(usage, "input_tokens_details")
    out_details = field_of(usage, "output_tokens_details")
    output = count(usage, "output_tokens")
    # Without a breakdown, every output token is an image token (SDK, gpt-image-1: "The number of
    # image tokens in the output image"). Streamed completed events may carry an empty
    # ``output_tokens_details: {}`` (maximhq/bifrost#4777): that is no breakdown either.
    image_out = field_of(out_details, "image_tokens")
    if not isinstance(image_out, int) or isinstance(image_out, bool):
        image_out = output - min(count(out_details, "text_tokens"), output)
    return Usage(
        input_tokens=count(usage, "input_tokens"),
        cached_input_tokens=count(in_details, "cached_tokens"),
        image_input_tokens=count(in_details, "image_tokens"),
        output_tokens=output,
        image_output_tokens=image_out,
    )


def _plus(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        image_input_tokens=a.image_input_tokens + b.image_input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        image_output_tokens=a.image_output_tokens + b.image_output_tokens,
        images=a.images + b.images,
    )


class ImageGenerateEndpoint(_ImagesEndpoint):
    """``POST /images/generations`` (JSON; streams ``image_generation.*`` events)."""

    api = "images.generate"
    paths = (("post", r"/images/generations"),)


class ImageEditEndpoint(_ImagesEndpoint):
    """``POST /images/edits`` (multipart: one or more images, optional mask; streams
    ``image_edit.*`` events)."""

    api = "images.edit"
    paths = (("post", r"/images/edits"),)


class ImageVariationEndpoint(_ImagesEndpoint):
    """``POST /images/variations`` (multipart, dall-e-2 only: its default model)."""

    api = "images.variation"
    paths = (("post", r"/images/variations"),)
    default_model: ClassVar[str | None] = "dall-e-2"


ENDPOINTS = (ImageGenerateEndpoint(), ImageEditEndpoint(), ImageVariationEndpoint())
