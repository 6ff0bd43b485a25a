"""``python -m genai_factory.gateway serve ...``: the same as ``gf gateway serve ...``."""

from genai_factory.gateway.cli import gateway

if __name__ == "__main__":  # pragma: no cover
    gateway(prog_name="python -m genai_factory.gateway")
