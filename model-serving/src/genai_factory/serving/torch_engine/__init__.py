"""A PyTorch inference engine of our own: paged KV cache, continuous batching, prefix caching,
speculative decoding and INT8/INT4 weights, over a packaged Llama-architecture GGUF model.

The parts, bottom up: :mod:`.block_manager` (pure-Python paged-cache bookkeeping), :mod:`.model`
(our forward pass over the block pool), :mod:`.sampling`, :mod:`.speculative`,
:mod:`.quantization`, :mod:`.core` (the iteration-level scheduler), :mod:`.engine` (the async
API, a worker thread) and :mod:`.chat` (the shared ``ChatModel`` contract).
"""

from genai_factory.serving.torch_engine.block_manager import BlockManager
from genai_factory.serving.torch_engine.chat import TorchChatModel
from genai_factory.serving.torch_engine.core import EngineConfig, EngineCore, TokenEvent
from genai_factory.serving.torch_engine.engine import GenerationResult, TorchEngine
from genai_factory.serving.torch_engine.sampling import SamplingParams

__all__ = [
    "BlockManager",
    "EngineConfig",
    "EngineCore",
    "GenerationResult",
    "SamplingParams",
    "TokenEvent",
    "TorchChatModel",
    "TorchEngine",
]
