"""Real HTTP upstreams for tests and benchmarks, on 127.0.0.1: scriptable faults, hosted wire formats.

:class:`~genai_factory.gateway.testing.upstream.ScriptedUpstream` speaks OpenAI's API and
misbehaves on cue (status codes with Retry-After, TCP resets, silence, slow first tokens, cut or
stalled or malformed streams, a missing ``[DONE]``).
:mod:`~genai_factory.gateway.testing.hosted` has Anthropic, Bedrock and Gemini servers that check
requests against each provider's documented wire format and answer in it.
:class:`~genai_factory.gateway.testing.tracer.RecordingTracer` is a tracer that keeps its spans
in memory.
"""

from genai_factory.gateway.testing.tracer import RecordedSpan, RecordingTracer
from genai_factory.gateway.testing.upstream import Fault, ScriptedUpstream

__all__ = ["Fault", "RecordedSpan", "RecordingTracer", "ScriptedUpstream"]
