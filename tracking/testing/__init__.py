"""Test helpers shipped for users' own tests too: a fake OpenAI upstream on loopback."""

from .fake_openai import OUTPUT_TOKENS, OUTPUT_TOKENS_2, FakeOpenAI, ReceivedRequest, build_app
from .faults import Fault, parse_fault

__all__ = [
    "OUTPUT_TOKENS",
    "OUTPUT_TOKENS_2",
    "FakeOpenAI",
    "Fault",
    "ReceivedRequest",
    "build_app",
    "parse_fault",
]
