"""Test helpers shipped for users' own tests too: a fake OpenAI upstream on loopback and an
event recorder."""

from .fake_openai import OUTPUT_TOKENS, FakeOpenAI, ReceivedRequest, build_app
from .faults import Fault, parse_fault
from .recorder import EventRecorder, recording

__all__ = [
    "OUTPUT_TOKENS",
    "EventRecorder",
    "FakeOpenAI",
    "Fault",
    "ReceivedRequest",
    "build_app",
    "parse_fault",
    "recording",
]
