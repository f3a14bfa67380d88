"""Test helpers shipped for users' own tests too: a fake OpenAI upstream on loopback and an
event recorder."""

from .fake_openai import OUTPUT_TOKENS, OUTPUT_TOKENS_2, FakeOpenAI, ReceivedRequest, build_app
from .faults import Fault, parse_fault
from .recorder import EventRecorder, recording

__all__ = [
    "OUTPUT_TOKENS",
    "OUTPUT_TOKENS_2",
    "EventRecorder",
    "FakeOpenAI",
    "Fault",
    "ReceivedRequest",
    "build_app",
    "parse_fault",
    "recording",
]
