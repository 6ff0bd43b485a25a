"""Weight quantisation for :class:`~genai_factory.serving.torch_engine.model.PagedLlama`.

Three modes replace the projections of every layer in place:

* ``int8``: dynamic int8 through ``torch.ao.quantization.quantize_dynamic`` (fbgemm): int8
  per-channel weights, activations quantised per call, int8 matmuls; the output head too. The
  fastest mode on x86 CPUs. ``down_proj`` stays weight-only int8: its input (the SwiGLU product)
  has outlier features that per-tensor activation quantisation destroys (measured on SmolLM2:
  perplexity x2 with it, +20% without it). ``torch.ao.quantization`` is deprecated upstream
  but still ships with torch 2.13.
* ``int8-weight-only``: our own per-output-channel symmetric int8 weights, dequantised on the fly
  (or PyTorch's ``_weight_int8pack_mm`` kernel with ``use_kernel``).
* ``int4``: our own group-wise asymmetric 4-bit weights (``group_size`` weights along the input
  share a scale and a zero point; two weights per byte), dequantised on the fly (or PyTorch's
  ``_weight_int4pack_mm_for_cpu`` kernel with ``use_kernel``). With ``group_size=32`` this matches
  the Q4_1 grouping of the packaged GGUF, so little is lost.

The weight-only modes keep the output head tied to the fp32 embedding table (no second copy).

GPTQ and AWQ (calibrated 4-bit) are not implemented here: they need calibration data and GPU
kernels, and would live behind a ``gpu`` extra.

Example:
    >>> import torch
    >>> from genai_factory.serving.torch_engine.quantization import Int4Linear
    >>> layer = torch.nn.Linear(64, 8, bias=False)
    >>> quantised = Int4Linear.from_linear(layer, group_size=32, use_kernel=False)
    >>> x = torch.randn(2, 64)
    >>> bool((quantised(x) - layer(x)).abs().max() < 0.5)
    True
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from genai_factory.shared.errors import ConfigError

__all__ = ["QUANTIZATION_MODES", "Int4Linear", "Int8Linear", "quantize_model"]

QUANTIZATION_MODES: tuple[str, ...] = ("none", "int8", "int8-weight-only", "int4")
_PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


class Int8Linear(nn.Module):
    """``y = x @ (w_int8 * scale).T`` with one symmetric scale per output channel."""

    weight_int8: Tensor
    scale: Tensor

    def __init__(self, weight: Tensor, scale: Tensor, use_kernel: bool = False) -> None:
        super().__init__()
        self.register_buffer("weight_int8", weight)
        self.register_buffer("scale", scale)
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.use_kernel = use_kernel and _has_op("_weight_int8pack_mm")

    @classmethod
    def from_linear(cls, layer: nn.Linear, use_kernel: bool = False) -> Int8Linear:
        weight = layer.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        quantised = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(quantised.contiguous(), scale.contiguous(), use_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_kernel:
            flat = x.reshape(-1, self.in_features)
            out: Tensor = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scale)
            return out.reshape(*x.shape[:-1], self.out_features)
        return torch.nn.functional.linear(x, self.weight_int8.to(x.dtype) * self.scale[:, None])


class Int4Linear(nn.Module):
    """Group-wise 4-bit weights, two per byte; ``w = (q - 8) * scale + zero`` per group."""

    packed: Tensor
    scales_and_zeros: Tensor

    def __init__(
        self,
        packed: Tensor,
        scales_and_zeros: Tensor,
        group_size: int,
        in_features: int,
        out_features: int,
        use_kernel: bool,
    ) -> None:
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [groups, out, 2]
        self.group_size = group_size
        self.in_features = in_features
        self.out_features = out_features
        self.use_kernel = use_kernel

    @classmethod
    def from_linear(
        cls, layer: nn.Linear, group_size: int = 32, use_kernel: bool = False
    ) -> Int4Linear:
        weight = layer.weight.detach().float()
        out_features, in_features = weight.shape
        if in_features % group_size:
            raise ConfigError(
                f"int4 group_size {group_size} must divide the input width {in_features}",
                param="quantization",
            )
        groups = weight.reshape(out_features, in_features // group_size, group_size)
        low = groups.amin(dim=-1, keepdim=True)
        high = groups.amax(dim=-1, keepdim=True)
        scale = ((high - low) / 15.0).clamp(min=1e-8)
        codes = torch.round((groups - low) / scale).clamp(0, 15).to(torch.int32)
        codes = codes.reshape(out_features, in_features)
        # the kernel's convention: w = (q - 8) * scale + zero, so zero = low + 8 * scale
        zero = low + 8.0 * scale
        scales_and_zeros = torch.stack(
            [scale.squeeze(-1).t(), zero.squeeze(-1).t()], dim=-1
        ).contiguous()
        kernel = use_kernel and _has_op("_convert_weight_to_int4pack_for_cpu")
        if kernel:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        else:
            packed = (codes[:, ::2] | (codes[:, 1::2] << 4)).to(torch.uint8)
        return cls(packed, scales_and_zeros, group_size, in_features, out_features, kernel)

    def dequantize(self) -> Tensor:
        """The fp32 weight these codes stand for (what the on-the-fly path multiplies by)."""
        if self.use_kernel:
            eye = torch.eye(self.in_features, dtype=torch.float32)
            return self.forward(eye).t().contiguous()
        groups = self.in_features // self.group_size
        codes = torch.stack([self.packed & 0x0F, self.packed >> 4], dim=-1)
        codes = codes.view(self.out_features, groups, self.group_size)
        scale = self.scales_and_zeros[..., 0].t().unsqueeze(-1)
        offset = self.scales_and_zeros[..., 1].t().unsqueeze(-1) - 8.0 * scale
        weight = torch.addcmul(offset, codes.to(torch.float32), scale)
        return weight.reshape(self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_kernel:
            flat = x.reshape(-1, self.in_features).float()
            out: Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat, self.packed, self.group_size, self.scales_and_zeros
            )
            return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return torch.nn.functional.linear(x, self.dequantize().to(x.dtype))


def quantize_model(
    model: nn.Module, mode: str, group_size: int = 32, use_kernels: bool = False
) -> nn.Module:
    """Replace the projections (and for ``int8`` the output head) of a PagedLlama, in place."""
    if mode not in QUANTIZATION_MODES:
        raise ConfigError(
            f"quantization must be one of {', '.join(QUANTIZATION_MODES)}, not {mode!r}",
            param="quantization",
        )
    if mode == "none":
        return model
    targets: list[tuple[nn.Module, str]] = [(model, "lm_head")] if mode == "int8" else []
    for layer in model.get_submodule("layers").children():
        targets.extend((layer, name) for name in _PROJECTIONS)
    for owner, name in targets:
        linear = getattr(owner, name)
        if not isinstance(linear, nn.Linear):
            raise ConfigError("the model is quantised already", param="quantization")
        replacement: nn.Module
        if mode == "int8-weight-only" or (mode == "int8" and name == "down_proj"):
            replacement = Int8Linear.from_linear(linear, use_kernels)
        elif mode == "int4":
            replacement = Int4Linear.from_linear(linear, group_size, use_kernels)
        else:
            with warnings.catch_warnings():  # torch.ao.quantization announces its own deprecation
                warnings.simplefilter("ignore")
                qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
                replacement = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    nn.Sequential(linear), {nn.Linear: qconfig}, dtype=torch.qint8
                )[0]
        setattr(owner, name, replacement)
    return model
