"""
``costmeter price MODEL`` (the rates costmeter uses, and their source) and ``costmeter estimate``
(the worst-case cost of a request body, offline): subcommands of `costmeter.cli`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import IO, TYPE_CHECKING, Any

from costmeter._report import Unreadable, UsageError
from costmeter.cli._common import (
    EXIT_OK,
    EXIT_UNKNOWN_MODEL,
    EXIT_USAGE,
    add_command,
    say,
)

if TYPE_CHECKING:
    from costmeter._pricing import ModelPrice
    from costmeter.cli._common import Subparsers

__all__ = ["add_estimate", "add_price"]


def _price_dict(price: ModelPrice) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": price.model,
        "priced_as": price.priced_as,
        "service_tier": price.service_tier,
        "source": price.source,
        "input_per_mtok": format(price.input_per_mtok, "f"),
        "cached_input_per_mtok": format(price.cached_input_per_mtok, "f"),
        "cache_write_per_mtok": format(price.cache_write_per_mtok, "f"),
        "output_per_mtok": format(price.output_per_mtok, "f"),
        "web_search_per_call": format(price.web_search_per_call, "f"),
        "long_context_threshold": price.long_context_threshold,
        "long_context": None,
    }
    if price.long_context is not None:
        data["long_context"] = {
            key: data_value
            for key, data_value in _price_dict(price.long_context).items()
            if key.endswith("_per_mtok")
        }
    return data


_SHOWN_AS_TOKENS = frozenset(
    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "web_searches"}
)
_SCALES = (("_mtok", "1M tokens"), ("_mchars", "1M characters"), ("_hours", "hour"),
           ("_kcount", "1k"), ("_kpages", "1k pages"), ("_gpixels", "1G pixels"))  # fmt: skip


def _other_rates(model: str) -> dict[str, str]:
    """Every further rate the model has (image, audio, per-character, per-hour, per-image), as
    published: {what: "$X / unit"}."""
    from costmeter._endpoints.images import DALLE_PRICES  # noqa: PLC0415
    from costmeter._money import money_math  # noqa: PLC0415
    from costmeter._rates import unit_rates  # noqa: PLC0415

    out: dict[str, str] = {}
    rates = unit_rates(model)
    if rates is not None:
        from genai_prices.data_units import unit_data  # noqa: PLC0415

        for unit, rate in rates.rates.items():
            if unit in _SHOWN_AS_TOKENS or unit not in unit_data:
                continue
            key = unit_data[unit]["price_key"]
            with money_math():
                published = (rate * unit_data[unit]["per"]).normalize()
            scale = next((label for suffix, label in _SCALES if key.endswith(suffix)), "unit")
            out[unit.replace("_", " ")] = f"${published:f} / {scale}"
    for (size, quality), price in DALLE_PRICES.get(model, {}).items():
        out[f"image {size} {quality}"] = f"${price:f} / image"
    return out


def _cmd_price(args: argparse.Namespace) -> int:
    from costmeter._endpoints._tools import hosted_tool_rates  # noqa: PLC0415
    from costmeter._errors import ConfigurationError, UnknownModelError  # noqa: PLC0415
    from costmeter._pricing import price_of  # noqa: PLC0415

    price = None
    try:
        price = price_of(args.model, service_tier=args.tier)
    except UnknownModelError as exc:
        unknown = str(exc)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    other = _other_rates(args.model)
    if price is None and not other:
        say(unknown)
        return EXIT_UNKNOWN_MODEL
    tools = {}
    if price is not None:
        tools = hosted_tool_rates(args.model, price.web_search_per_call)
    if args.format == "json":
        data = _price_dict(price) if price is not None else {"model": args.model}
        data["other_rates"] = other
        data["hosted_tools"] = tools
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    out = sys.stdout
    if price is not None:
        _write_token_prices(price, out)
    else:
        out.write(f"{args.model}: no per-token price; priced by:\n")
    for what, shown in other.items():
        out.write(f"  {what:<26} {shown}\n")
    for what, shown in tools.items():
        out.write(f"  {what:<26} {shown} (hosted tool)\n")
    return EXIT_OK


def _write_token_prices(price: ModelPrice, out: IO[str]) -> None:
    data = _price_dict(price)
    out.write(
        f"{price.model}: priced as {price.priced_as}, service tier {price.service_tier}, "
        f"source {price.source}\n"
        f"  input          ${data['input_per_mtok']} / 1M tokens\n"
        f"  cached input   ${data['cached_input_per_mtok']} / 1M tokens\n"
        f"  cache write    ${data['cache_write_per_mtok']} / 1M tokens\n"
        f"  output         ${data['output_per_mtok']} / 1M tokens (reasoning included)\n"
    )
    if price.web_search_per_call:
        out.write(f"  web search     ${data['web_search_per_call']} / call\n")
    long = data["long_context"]
    if long is not None:
        out.write(
            f"  above {price.long_context_threshold:,} input tokens the whole request costs: "
            f"input ${long['input_per_mtok']}, cached ${long['cached_input_per_mtok']}, "
            f"output ${long['output_per_mtok']} / 1M tokens\n"
        )


def add_price(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "price",
        "show the prices costmeter uses for a model, and their source",
        "Show the prices (USD per 1M tokens) costmeter uses for MODEL and where "
        "they come from (override, COSTMETER_PRICES_FILE, genai-prices, tokencost).",
        "examples:\n  costmeter price gpt-5\n  costmeter price gpt-5-mini --tier flex "
        "--format json\n\nexit codes: 0 ok, 2 usage error, 4 no price known for the model.",
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument(
        "--tier", default=None, help="service tier: default, flex, priority, batch, ..."
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(handler=_cmd_price)


def _read_body(path: str) -> dict[str, Any]:
    name = "<stdin>" if path == "-" else path  # how messages name the input
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreadable(name, exc) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{name} must hold a JSON object (a request body)")
    return body


def _cmd_estimate(args: argparse.Namespace) -> int:
    from costmeter._errors import ConfigurationError, UnknownModelError  # noqa: PLC0415

    try:  # imported here: the other commands must work without it
        estimate: Any = importlib.import_module("costmeter._estimate").estimate
    except (ImportError, AttributeError):
        say("estimate is not available in this version of costmeter")
        return EXIT_USAGE
    body = _read_body(args.request)
    body_model = body.pop("model", None)
    model = args.model or body_model
    if not isinstance(model, str) or not model:
        raise UsageError('no model: pass --model MODEL or put "model" in the request body')
    try:
        result = estimate(model=model, **body)
    except UnknownModelError as exc:
        say(str(exc))
        return EXIT_UNKNOWN_MODEL
    except (ConfigurationError, TypeError) as exc:
        raise UsageError(f"cannot estimate this request: {exc}") from None
    cost = getattr(result, "cost_usd", None)
    reasons = [str(reason) for reason in getattr(result, "reasons", ()) or ()]
    data = {
        "model": getattr(result, "model", model),
        "input_tokens": getattr(result, "input_tokens", None),
        "max_output_tokens": getattr(result, "max_output_tokens", None),
        "output_bound_from_request": getattr(result, "output_bound_from_request", None),
        "cost_usd": None if cost is None else format(cost, "f"),
        "complete": getattr(result, "complete", None),
        "reasons": reasons,
        "price_source": getattr(result, "price_source", None),
    }
    # an unpriced model still prints its token estimate, but a script must be able to tell
    status = EXIT_OK if cost is not None else EXIT_UNKNOWN_MODEL
    if args.format == "json":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return status
    bound = "from the request" if data["output_bound_from_request"] else "costmeter's default"
    cost_text = "unknown (no price for this model)" if cost is None else f"${data['cost_usd']}"
    complete = "yes" if data["complete"] else "no"
    sys.stdout.write(
        f"model               {data['model']}\n"
        f"input tokens        {data['input_tokens']}\n"
        f"max output tokens   {data['max_output_tokens']} ({bound})\n"
        f"worst-case cost     {cost_text}"
        + (f" (prices: {data['price_source']})" if data["price_source"] else "")
        + "\n"
        f"complete estimate   {complete}\n"
    )
    for reason in reasons:
        sys.stdout.write(f"  - {reason}\n")
    return status


def add_estimate(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "estimate",
        "worst-case cost of a request body, before sending it",
        "Estimate the input tokens and worst-case cost of a request body (the JSON "
        "you would pass to responses.create / chat.completions.create), offline.",
        "examples:\n  costmeter estimate --model gpt-5 request.json\n"
        '  echo \'{"input": "hi", "max_output_tokens": 500}\' | '
        "costmeter estimate --model gpt-5-mini\n\n"
        "exit codes: 0 ok, 2 usage error (bad JSON), 3 unreadable file, 4 unknown model.",
    )
    parser.add_argument("--model", help='the model (default: the body\'s "model")')
    parser.add_argument(
        "request", nargs="?", default="-", metavar="REQUEST.json", help="request body, or - (stdin)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(handler=_cmd_estimate)
