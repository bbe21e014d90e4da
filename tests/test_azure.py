"""
Azure OpenAI through `costmeter.AzureOpenAI` / `AsyncAzureOpenAI`, over real loopback HTTP.

The SDK's Azure client rewrites deployment-based paths to
``/openai/deployments/{name}/chat/completions?api-version=...``; the request ``model`` is a
deployment name, and responses name models loosely (``gpt-35-turbo``, undated ``gpt-4``,
``ada``). Mapped deployments price as the mapped model; an unmapped deployment is never priced as
some other model.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

import costmeter
from costmeter import cost_of
from costmeter.testing import FakeOpenAI

from .helpers import calls, chat_body, money

API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Summarise the quarterly report in a line."}]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}


@pytest.fixture(autouse=True)
def _fresh_server(server: FakeOpenAI) -> Iterator[None]:
    server.reset()
    yield
    assert [] == server.errors
    assert 0 == server.pending_faults


def _azure(server: FakeOpenAI, **options: Any) -> costmeter.AzureOpenAI:
    return costmeter.AzureOpenAI(
        api_key="azure-test-key",
        api_version=API_VERSION,
        azure_endpoint=server.url,
        max_retries=0,
        **options,
    )


def _answer(server: FakeOpenAI, model: str) -> None:
    """The next chat call is answered naming *model*, as Azure names it."""
    server.replay_next({**chat_body(model=model), "usage": USAGE}, stream=False)


def _chat(client: costmeter.AzureOpenAI, deployment: str) -> dict[str, Any]:
    with capture_logs() as logs:
        client.chat.completions.create(model=deployment, messages=MESSAGES)  # type: ignore[arg-type]
    [event] = calls(logs)
    return event


class TestPaths:
    def test_chat_deployment_path_is_metered(self, server: FakeOpenAI) -> None:
        """The rewritten deployment URL is still recognised as a billed chat call."""
        client = _azure(server, deployments={"prod-chat": "gpt-4o-2024-08-06"})
        _answer(server, "gpt-4o-2024-08-06")

        event = _chat(client, "prod-chat")

        request = server.last_request
        assert request is not None
        assert "/openai/deployments/prod-chat/chat/completions" == request.path
        assert {"api-version": API_VERSION} == request.query
        assert ("chat.completions", "prod-chat", 1000) == (
            event["api"],
            event["model"],
            event["input_tokens"],
        )

    def test_embeddings_deployment_path_is_metered(self, server: FakeOpenAI) -> None:
        """Embeddings on a deployment path are metered with api "embeddings"."""
        client = _azure(server, deployments={"emb": "text-embedding-3-small"})

        with capture_logs() as logs:
            result = client.embeddings.create(model="emb", input="a passage")

        assert server.last_request is not None
        assert "/openai/deployments/emb/embeddings" == server.last_request.path
        [event] = calls(logs)
        assert ("embeddings", "ok") == (event["api"], event["price_status"])
        usage = result.usage.model_dump()
        assert cost_of("text-embedding-3-small", usage).total_usd == money(event["cost_usd"])

    def test_client_bound_to_a_deployment(self, server: FakeOpenAI) -> None:
        """azure_deployment= puts the deployment in the base URL; metering is unchanged."""
        client = _azure(
            server, azure_deployment="prod-chat", deployments={"prod-chat": "gpt-4o-mini"}
        )
        _answer(server, "gpt-4o-mini-2024-07-18")

        event = _chat(client, "prod-chat")

        assert server.last_request is not None
        assert "/openai/deployments/prod-chat/chat/completions" == server.last_request.path
        assert cost_of("gpt-4o-mini", USAGE).total_usd == money(event["cost_usd"])

    def test_stream(self, server: FakeOpenAI) -> None:
        """An Azure chat stream is metered once, estimated without usage, priced via mapping."""
        client = _azure(server, deployments={"team-chat": "gpt-4o-mini-2024-07-18"})

        with capture_logs() as logs:
            for _ in client.chat.completions.create(
                model="team-chat", messages=MESSAGES, stream=True
            ):
                pass

        [event] = calls(logs)
        assert ("ok", "estimated", "ok") == (
            event["outcome"],
            event["usage_source"],
            event["price_status"],
        )
        assert event["priced_as"] == "gpt-4o-mini"

    def test_responses_api(self, server: FakeOpenAI) -> None:
        """The Responses API on Azure (not a deployment path) is metered as "responses"."""
        client = _azure(server, deployments={"resp-dep": "gpt-4.1-mini"})

        with capture_logs() as logs:
            client.responses.create(model="resp-dep", input="hello")

        assert server.last_request is not None
        assert "/openai/responses" == server.last_request.path
        [event] = calls(logs)
        assert ("responses", "gpt-4.1-mini") == (event["api"], event["priced_as"])


class TestMappedDeployments:
    def test_priced_as_the_mapped_model(self, server: FakeOpenAI) -> None:
        """A mapped deployment is priced, before and after the call, as its model."""
        client = _azure(
            server, deployments={"prod-chat": "gpt-4o-2024-08-06"}, always_estimate=True
        )
        _answer(server, "gpt-4o-2024-08-06")

        event = _chat(client, "prod-chat")

        assert cost_of("gpt-4o-2024-08-06", USAGE).total_usd == money(event["cost_usd"])
        assert ("ok", "gpt-4o") == (event["price_status"], event["priced_as"])
        assert money(event["estimated_cost_usd"]) > 0

    def test_mapping_wins_over_a_family_name(self, server: FakeOpenAI) -> None:
        """
        Azure answers "gpt-4" for a gpt-4-1106-preview deployment ($10/$30, not gpt-4's
        $30/$60): the mapping decides.
        """
        client = _azure(server, deployments={"legacy": "gpt-4-1106-preview"})
        _answer(server, "gpt-4")

        event = _chat(client, "legacy")

        assert ("gpt-4", "gpt-4-turbo") == (event["response_model"], event["priced_as"])
        assert Decimal("0.016") == money(event["cost_usd"])  # 1000 x $10 + 200 x $30 per 1M

    def test_mapping_wins_over_azure_ada(self, server: FakeOpenAI) -> None:
        """Azure may name text-embedding-ada-002 just "ada" (a different, dearer model)."""
        client = _azure(server, deployments={"emb": "text-embedding-ada-002"})
        server.replay_next(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": "ada",
                "usage": {"prompt_tokens": 1000, "total_tokens": 1000},
            },
            stream=False,
        )

        with capture_logs() as logs:
            client.embeddings.create(model="emb", input="a passage", encoding_format="float")

        [event] = calls(logs)
        assert ("text-embedding-ada-002", Decimal("0.0001")) == (
            event["priced_as"],
            money(event["cost_usd"]),
        )

    def test_a_more_specific_response_model_wins(self, server: FakeOpenAI) -> None:
        """Mapping "gpt-4o", response "gpt-4o-2024-05-13": that snapshot has its own price."""
        client = _azure(server, deployments={"prod": "gpt-4o"})
        _answer(server, "gpt-4o-2024-05-13")

        event = _chat(client, "prod")

        assert cost_of("gpt-4o-2024-05-13", USAGE).total_usd == money(event["cost_usd"])
        assert "gpt-4o-2024-05-13" == event["priced_as"]

    def test_azure_35_spelling_with_a_mapping(self, server: FakeOpenAI) -> None:
        """The Azure spelling gpt-35-turbo maps to OpenAI's gpt-3.5-turbo price."""
        client = _azure(server, deployments={"chat35": "gpt-35-turbo-0125"})
        _answer(server, "gpt-35-turbo")

        event = _chat(client, "chat35")

        assert ("ok", "gpt-3.5-turbo") == (event["price_status"], event["priced_as"])
        assert cost_of("gpt-3.5-turbo-0125", USAGE).total_usd == money(event["cost_usd"])

    async def test_async(self, server: FakeOpenAI) -> None:
        """AsyncAzureOpenAI prices through the mapping the same way."""
        _answer(server, "gpt-4o-2024-08-06")
        async with costmeter.AsyncAzureOpenAI(
            api_key="azure-test-key",
            api_version=API_VERSION,
            azure_endpoint=server.url,
            max_retries=0,
            deployments={"prod-chat": "gpt-4o-2024-08-06"},
        ) as client:
            with capture_logs() as logs:
                await client.chat.completions.create(model="prod-chat", messages=MESSAGES)  # type: ignore[arg-type]

        [event] = calls(logs)
        assert cost_of("gpt-4o-2024-08-06", USAGE).total_usd == money(event["cost_usd"])


class TestUnmappedDeployments:
    def test_unknown_name_is_not_priced(self, server: FakeOpenAI) -> None:
        """
        A deployment name no source knows, echoed by the response: tokens reported, cost null,
        and the status names the fix (map the deployment).
        """
        client = _azure(server)
        _answer(server, "team-x")

        event = _chat(client, "team-x")

        assert (1000, None, "unmapped_deployment", None) == (
            event["input_tokens"],
            event["cost_usd"],
            event["price_status"],
            event["priced_as"],
        )

    def test_response_model_prices_an_unmapped_deployment(self, server: FakeOpenAI) -> None:
        """Without a mapping the response's dated model is what is priced."""
        client = _azure(server)
        _answer(server, "gpt-4o-mini-2024-07-18")

        event = _chat(client, "team-x")

        assert ("ok", "gpt-4o-mini") == (event["price_status"], event["priced_as"])
        assert cost_of("gpt-4o-mini-2024-07-18", USAGE).total_usd == money(event["cost_usd"])

    def test_family_name_alone_is_flagged(self, server: FakeOpenAI) -> None:
        """
        Unmapped, Azure answering "gpt-35-turbo" could be any 3.5 version: priced as the
        family's current price, flagged "undated_model" rather than reported as exact.
        """
        client = _azure(server)
        _answer(server, "gpt-35-turbo")

        event = _chat(client, "chat35")

        assert ("undated_model", "gpt-3.5-turbo") == (event["price_status"], event["priced_as"])

    def test_refused_inside_a_budget(self, server: FakeOpenAI) -> None:
        """Inside a budget an unpriceable deployment fails closed: refused, nothing sent."""
        client = _azure(server)

        with pytest.raises(costmeter.UnknownModelError):
            with costmeter.budget("5"):
                client.chat.completions.create(model="team-x", messages=MESSAGES)  # type: ignore[arg-type]

        assert 0 == server.calls

    def test_allowed_when_the_budget_allows_unpriced(self, server: FakeOpenAI) -> None:
        """budget(allow_unpriced=True) lets it through; nothing is charged to the budget."""
        client = _azure(server)
        _answer(server, "team-x")

        with costmeter.budget("5", allow_unpriced=True) as b:
            event = _chat(client, "team-x")

        assert (None, Decimal(0)) == (event["cost_usd"], b.spent_usd)
